"""Model inputs as Postgres's binary send forms: decoded for the model, hashed for the cache.

The inputs a call reaches are read in the client's own session (with the client's privileges),
so the digest that session computes is only trusted to find cached outputs for that client.
Outputs are written under a digest SieveDB computes itself from the very bytes the model ran
on: a session that lies (a search_path that shadows ``sha256``, say) can only fool itself.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import numpy as np

from planner.outcome import PlanError
from planner.sqltypes import SqlType

NULL_NOT_ALLOWED = "22004"
_INT = struct.Struct("!i")
_ELEMENT = {
    "int2": np.dtype(">i2"),
    "int4": np.dtype(">i4"),
    "int8": np.dtype(">i8"),
    "float4": np.dtype(">f4"),
    "float8": np.dtype(">f8"),
    "bool": np.dtype("?"),
}


def send_sql(sql_type: SqlType, expr: str) -> str:
    """SQL giving the binary send form of ``expr`` (already cast to ``sql_type``) as bytea."""
    if sql_type.is_array:
        return f"pg_catalog.array_send({expr})"
    if sql_type.base == "bytea":
        return expr
    return f"pg_catalog.{sql_type.base if sql_type.base != 'varchar' else 'text'}send({expr})"


def digest_of(parts: list[bytes]) -> bytes:
    """The content address of one input, computed as the SQL digest is (planner.install)."""
    data = parts[0] if len(parts) == 1 else b"".join(_INT.pack(len(p)) + p for p in parts)
    return hashlib.sha256(data).digest()


def digests_of(columns: Sequence[Sequence[bytes]]) -> list[bytes]:
    """``digest_of`` for every row of a chunk, its arguments' send forms column by column."""
    if len(columns) == 1:
        sha256 = hashlib.sha256
        return [sha256(raw).digest() for raw in columns[0]]
    return [digest_of(list(parts)) for parts in zip(*columns, strict=True)]


def decode_column(sql_type: SqlType, raws: Sequence[bytes], model: str, arg: str) -> np.ndarray | list:
    """One argument's values for a chunk of rows: one ``[rows, *dims]`` array when every array
    has the same shape (decoded by numpy in one pass, not row by row), else one value per row."""
    if sql_type.is_array and raws:
        block = _uniform_arrays(sql_type, raws, model, arg)
        if block is not None:
            return block
    return [decode(sql_type, raw, model, arg) for raw in raws]


def _uniform_arrays(sql_type: SqlType, raws: Sequence[bytes], model: str, arg: str) -> np.ndarray | None:
    """Arrays whose send forms all share one header (dimensions, no NULL element), as one block;
    None when they differ, so the caller decodes them one by one."""
    size = len(raws[0])
    if any(len(raw) != size for raw in raws):
        return None
    rows = np.frombuffer(b"".join(raws), dtype=np.uint8).reshape(len(raws), size)
    return decode_block(sql_type, rows, model, arg)


def decode_block(sql_type: SqlType, rows: np.ndarray, model: str, arg: str) -> np.ndarray | None:
    """Send forms of one length, one row of ``rows`` (uint8) each, decoded in one numpy pass:
    arrays sharing one header (dimensions, no NULL element) or fixed-width numbers; None for
    anything else, which the caller decodes one by one."""
    if not sql_type.is_array:
        dtype = _ELEMENT.get(sql_type.base)
        if dtype is None or sql_type.base == "bool" or rows.shape[1] != dtype.itemsize:
            return None
        return np.ascontiguousarray(rows).view(dtype).reshape(-1).astype(dtype.newbyteorder("="))
    first = rows[0].tobytes() if len(rows) else b""
    size = len(first)
    ndim = _INT.unpack_from(first, 0)[0] if size >= 12 else 0
    head = 12 + 8 * ndim
    if ndim == 0 or size < head or not (rows[:, :head] == rows[0, :head]).all():
        return None
    if _INT.unpack_from(first, 4)[0]:
        _array(sql_type, first, model, arg)  # raises the NULL-element error
    dims = [_INT.unpack_from(first, 12 + 8 * k)[0] for k in range(ndim)]
    dtype = _ELEMENT[sql_type.base]
    count = int(np.prod(dims))
    if size != head + count * (4 + dtype.itemsize):
        return None
    pairs = np.ascontiguousarray(rows[:, head:]).view(np.dtype([("length", ">i4"), ("value", dtype)]))
    if not (pairs["length"] == dtype.itemsize).all():
        return None
    return pairs["value"].astype(dtype.newbyteorder("=")).reshape(len(rows), *dims)


def decode(sql_type: SqlType, raw: bytes, model: str, arg: str) -> object:
    """One argument's value for the model: a numpy vector for arrays, else a Python scalar."""
    if sql_type.is_array:
        return _array(sql_type, raw, model, arg)
    base = sql_type.base
    if base == "bytea":
        return bytes(raw)
    if base in ("text", "varchar"):
        return bytes(raw).decode("utf-8")
    if base == "bool":
        return raw != b"\x00"
    return np.frombuffer(raw, dtype=_ELEMENT[base], count=1)[0].item()


def _array(sql_type: SqlType, raw: bytes, model: str, arg: str) -> np.ndarray:
    ndim, has_null = _INT.unpack_from(raw, 0)[0], _INT.unpack_from(raw, 4)[0]
    dtype = _ELEMENT[sql_type.base]
    if has_null:
        raise PlanError(
            NULL_NOT_ALLOWED,
            f'null value not allowed in array argument "{arg}" of model {model}',
            hint="filter such rows out (e.g. WHERE array_position(col, NULL) IS NULL) or replace the NULLs",
        )
    if ndim == 0:
        return np.empty(0, dtype=dtype.newbyteorder("="))
    dims = [_INT.unpack_from(raw, 12 + 8 * k)[0] for k in range(ndim)]
    count = int(np.prod(dims))
    pairs = np.dtype([("length", ">i4"), ("value", dtype)])
    values = np.frombuffer(raw, dtype=pairs, count=count, offset=12 + 8 * ndim)["value"]
    return values.astype(dtype.newbyteorder("=")).reshape(dims)
