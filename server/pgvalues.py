"""Result values of the planner's own queries, decoded from Postgres's wire formats.

The planner's queries run in the client's backend session over the extended protocol, so their
rows arrive as protocol messages. Types the planner reads in bulk come in binary (fixed-width
numbers, bytea, arrays of numbers); everything else in text. Values look like asyncpg's: ints,
floats, bools, str, bytes, uuid.UUID, Decimal, lists for arrays (None for NULL elements).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from decimal import Decimal

BOOL, BYTEA, INT8, INT2, INT4, OID, FLOAT4, FLOAT8, UUID, NUMERIC = (
    16,
    17,
    20,
    21,
    23,
    26,
    700,
    701,
    2950,
    1700,
)
_ELEMENT_OF = {1000: BOOL, 1005: INT2, 1007: INT4, 1016: INT8, 1021: FLOAT4, 1022: FLOAT8}

_SCALAR_BINARY: dict[int, Callable[[bytes], object]] = {
    BOOL: lambda raw: raw != b"\x00",
    BYTEA: bytes,
    INT2: lambda raw: struct.unpack("!h", raw)[0],
    INT4: lambda raw: struct.unpack("!i", raw)[0],
    INT8: lambda raw: struct.unpack("!q", raw)[0],
    OID: lambda raw: struct.unpack("!I", raw)[0],
    FLOAT4: lambda raw: struct.unpack("!f", raw)[0],
    FLOAT8: lambda raw: struct.unpack("!d", raw)[0],
    UUID: lambda raw: uuid.UUID(bytes=bytes(raw)),
}
_TEXT: dict[int, Callable[[str], object]] = {NUMERIC: Decimal}
_LEN = struct.Struct("!i")
_SHORT = struct.Struct("!h")


def result_format(oid: int) -> int:
    """1 (binary) for the types decoded here from binary, 0 (text) for every other."""
    return 1 if oid in _SCALAR_BINARY or oid in _ELEMENT_OF else 0


def decoder(oid: int, fmt: int) -> Callable[[bytes], object]:
    if fmt == 1:
        if oid in _ELEMENT_OF:
            element = _SCALAR_BINARY[_ELEMENT_OF[oid]]
            return lambda raw: decode_array(raw, element)
        return _SCALAR_BINARY[oid]
    convert = _TEXT.get(oid)
    if convert is None:
        return lambda raw: raw.decode("utf-8", "replace")
    return lambda raw: convert(raw.decode())


def decode_array(raw: bytes, element: Callable[[bytes], object]) -> list:
    """Postgres's binary array format (array_send): a 1-D array gives a flat list, deeper ones
    nested lists; NULL elements are None."""
    ndim = _LEN.unpack_from(raw, 0)[0]
    if ndim == 0:
        return []
    dims = [_LEN.unpack_from(raw, 12 + 8 * k)[0] for k in range(ndim)]
    pos, flat = 12 + 8 * ndim, []
    for _ in range(_product(dims)):
        (length,) = _LEN.unpack_from(raw, pos)
        pos += 4
        if length < 0:
            flat.append(None)
        else:
            flat.append(element(raw[pos : pos + length]))
            pos += length
    return _nest(flat, dims)


def _product(dims: list[int]) -> int:
    total = 1
    for d in dims:
        total *= d
    return total


def _nest(flat: list, dims: list[int]) -> list:
    if len(dims) == 1:
        return flat
    step = len(flat) // dims[0]
    return [_nest(flat[i * step : (i + 1) * step], dims[1:]) for i in range(dims[0])]


class _EveryColumn:
    """Decoders of a row whose columns are all text, however many there are."""

    def __getitem__(self, _: int) -> Callable[[bytes], object]:
        return _utf8


def _utf8(raw: bytes) -> str:
    return raw.decode()


TEXT_DECODERS = _EveryColumn()


def decode_row(body: bytes, decoders) -> tuple:
    """One DataRow body (after the 5-byte header) into a tuple of values; ``decoders[i]``
    decodes column i (``TEXT_DECODERS``: every column as text)."""
    (count,) = _SHORT.unpack_from(body)
    pos, row = 2, []
    for i in range(count):
        (length,) = _LEN.unpack_from(body, pos)
        pos += 4
        if length < 0:
            row.append(None)
        else:
            row.append(decoders[i](body[pos : pos + length]))
            pos += length
    return tuple(row)


def encode_text_param(value: object) -> bytes | None:
    """A parameter value in text format (Postgres infers or is told its type)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, list | tuple):
        return ("{" + ",".join(_array_element(v) for v in value) + "}").encode()
    return str(value).encode()


def _array_element(value: object) -> str:
    if value is None:
        return "NULL"
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
