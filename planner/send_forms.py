"""Model inputs as Postgres's binary send forms: decoded for the model, hashed for the cache.

The inputs a call reaches are read in the client's own session (with the client's privileges),
so the digest that session computes is only trusted to find cached outputs for that client.
Outputs are written under a digest SieveDB computes itself from the very bytes the model ran
on: a session that lies (a search_path that shadows ``sha256``, say) can only fool itself.
"""

from __future__ import annotations

import hashlib
import struct

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
