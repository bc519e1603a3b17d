"""Parameter values of a Bind message, as SQL literal text for the planner.

The planner pushes predicates with ``$n`` down into its input queries by substituting the bound
values; it needs them as text. Text-format values are text already; binary ones are decoded for
the common types, and left unknown (None in ``known``) otherwise, so the planner keeps the
predicate out of its pushdown rather than guess.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from dataclasses import dataclass

from planner.outcome import PlanError

_SHORT = struct.Struct("!h")
_INT = struct.Struct("!i")
_EPOCH = dt.datetime(2000, 1, 1)
_EPOCH_DATE = dt.date(2000, 1, 1)


def _timestamp(raw: bytes) -> str:
    return (_EPOCH + dt.timedelta(microseconds=struct.unpack("!q", raw)[0])).isoformat()


# oid -> (type name for a cast, binary decoder to text)
_BINARY: dict[int, tuple[str, object]] = {
    16: ("boolean", lambda b: "true" if b[0] else "false"),
    17: ("bytea", lambda b: "\\x" + b.hex()),
    20: ("bigint", lambda b: str(struct.unpack("!q", b)[0])),
    21: ("smallint", lambda b: str(struct.unpack("!h", b)[0])),
    23: ("integer", lambda b: str(struct.unpack("!i", b)[0])),
    700: ("real", lambda b: repr(struct.unpack("!f", b)[0])),
    701: ("double precision", lambda b: repr(struct.unpack("!d", b)[0])),
    25: ("text", lambda b: b.decode()),
    1043: ("varchar", lambda b: b.decode()),
    1042: ("bpchar", lambda b: b.decode()),
    19: ("name", lambda b: b.decode()),
    2950: ("uuid", lambda b: str(uuid.UUID(bytes=b))),
    1082: ("date", lambda b: (_EPOCH_DATE + dt.timedelta(days=struct.unpack("!i", b)[0])).isoformat()),
    1114: (
        "timestamp",
        lambda b: (_EPOCH + dt.timedelta(microseconds=struct.unpack("!q", b)[0])).isoformat(),
    ),
    1184: (
        "timestamptz",
        lambda b: (_EPOCH + dt.timedelta(microseconds=struct.unpack("!q", b)[0])).isoformat() + "+00",
    ),
}
TYPE_NAMES = {oid: name for oid, (name, _) in _BINARY.items()}


@dataclass(frozen=True)
class Bind:
    statement: str
    formats: list[int]  # one per value (the protocol's 0/1/n format-code rule applied)
    values: list[bytes | None]
    portal: str = ""
    result_formats: tuple[int, ...] = ()  # as sent: none, one for all columns, or one per column


def parse_bind(frame: bytes) -> Bind:
    body = frame[5:]
    portal_end = body.index(0)
    portal = body[:portal_end].decode("utf-8", "replace")
    statement_end = body.index(0, portal_end + 1)
    statement = body[portal_end + 1 : statement_end].decode("utf-8", "replace")
    pos = statement_end + 1
    (count,) = _SHORT.unpack_from(body, pos)
    codes = [_SHORT.unpack_from(body, pos + 2 + 2 * i)[0] for i in range(count)]
    pos += 2 + 2 * count
    (nvalues,) = _SHORT.unpack_from(body, pos)
    pos += 2
    values: list[bytes | None] = []
    for _ in range(nvalues):
        (length,) = _INT.unpack_from(body, pos)
        pos += 4
        if length < 0:
            values.append(None)
        else:
            values.append(body[pos : pos + length])
            pos += length
    (nresults,) = _SHORT.unpack_from(body, pos)
    results = struct.unpack_from(f"!{nresults}h", body, pos + 2)
    formats = codes * nvalues if len(codes) == 1 else (codes or [0] * nvalues)
    return Bind(statement, formats, values, portal, results)


def parse_param_types(frame: bytes) -> list[int]:
    """The parameter type OIDs a Parse message declares (0 = let Postgres infer)."""
    body = frame[5:]
    name_end = body.index(0)
    sql_end = body.index(0, name_end + 1)
    (count,) = _SHORT.unpack_from(body, sql_end + 1)
    return [_INT.unpack_from(body, sql_end + 3 + 4 * i)[0] for i in range(count)]


@dataclass(frozen=True)
class ParamText:
    """One bound value as text, with the type to cast it to (None: leave it untyped)."""

    text: str | None  # None is SQL NULL
    type_name: str | None


def as_text(bind: Bind, oids: list[int]) -> list[ParamText | None]:
    """Each value as text; None for a value that could not be decoded."""
    out: list[ParamText | None] = []
    for i, (fmt, value) in enumerate(zip(bind.formats, bind.values, strict=True)):
        oid = oids[i] if i < len(oids) else 0
        type_name = TYPE_NAMES.get(oid)
        if value is None:
            out.append(ParamText(None, type_name))
        elif fmt == 0:
            out.append(ParamText(value.decode("utf-8", "replace"), type_name))
        elif oid in _BINARY:
            out.append(ParamText(_decode_binary(oid, value, i + 1), type_name))
        else:
            out.append(None)
    return out


# Bytes of the fixed-size binary forms: shorter is 08P01 (the receive function runs out of
# message), longer is 22P03 (bytes left over), as Postgres's exec_bind_message says.
_BINARY_SIZES = {16: 1, 20: 8, 21: 2, 23: 4, 700: 4, 701: 8, 2950: 16, 1082: 4, 1114: 8, 1184: 8}


def _decode_binary(oid: int, value: bytes, number: int) -> str:
    """A binary value as text, refused as Postgres's receive functions refuse it."""
    size = _BINARY_SIZES.get(oid)
    if size is not None and len(value) < size:
        raise PlanError("08P01", "insufficient data left in message")
    if size is not None and len(value) > size:
        raise PlanError("22P03", f"incorrect binary data format in bind parameter {number}")
    try:
        return _BINARY[oid][1](value)
    except UnicodeDecodeError as exc:
        raise PlanError("22021", 'invalid byte sequence for encoding "UTF8"') from exc
    except (struct.error, ValueError, OverflowError) as exc:
        raise PlanError("22008", "timestamp out of range") from exc
