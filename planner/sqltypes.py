"""SQL argument/column types of model functions, and how they meet ONNX tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# canonical name -> (SQL spelling, numpy dtype of the value, the binary *send function for digests)
_SCALARS = {
    "int2": ("smallint", np.int16, "int2send"),
    "int4": ("integer", np.int32, "int4send"),
    "int8": ("bigint", np.int64, "int8send"),
    "float4": ("real", np.float32, "float4send"),
    "float8": ("double precision", np.float64, "float8send"),
    "bool": ("boolean", np.bool_, "boolsend"),
    "text": ("text", object, "textsend"),
    "varchar": ("text", object, "textsend"),
    "bytea": ("bytea", object, ""),
}
_ALIASES = {
    "integer": "int4",
    "int": "int4",
    "bigint": "int8",
    "smallint": "int2",
    "real": "float4",
    "double precision": "float8",
    "boolean": "bool",
    "float": "float8",
}
_NUMERIC_TENSORS = {"float32", "float64", "int32", "int64", "int16", "int8", "uint8", "float16"}
_FLOAT_TENSORS = {"float32", "float64", "float16"}
_INT_TENSORS = {"int32", "int64", "int16", "int8", "uint8", "uint16", "uint32", "uint64"}


@dataclass(frozen=True)
class SqlType:
    base: str  # canonical scalar name, e.g. "float4"
    is_array: bool = False

    @classmethod
    def from_names(cls, names: list[str], is_array: bool) -> SqlType:
        name = names[-1].lower()
        name = _ALIASES.get(name, name)
        if name not in _SCALARS:
            raise ValueError(f"type {name}{'[]' if is_array else ''} is not supported for model functions")
        if name == "varchar":
            name = "text"
        return cls(name, is_array)

    @property
    def sql(self) -> str:
        return _SCALARS[self.base][0] + ("[]" if self.is_array else "")

    @property
    def dtype(self) -> type:
        return _SCALARS[self.base][1]

    @property
    def is_numeric(self) -> bool:
        return self.base in ("int2", "int4", "int8", "float4", "float8")

    def digest_bytes(self, expr: str) -> str:
        """SQL giving the value's binary send form: stable across sessions, unlike its text."""
        if self.is_array:
            return f"array_send({expr})"
        if self.base == "bytea":
            return f"({expr})"
        return f"{_SCALARS[self.base][2]}({expr})"

    def to_dict(self) -> dict:
        return {"base": self.base, "array": self.is_array}

    @classmethod
    def from_dict(cls, data: dict) -> SqlType:
        return cls(data["base"], data["array"])


def input_mismatch(sql_type: SqlType, tensor, has_decode: bool) -> str | None:
    """Why a SQL argument cannot feed this model input, or None when it can."""
    kind, elem, shape = tensor.kind, tensor.elem_type, tensor.shape
    if kind != "tensor":
        return f"model input is a {tensor.type_str}, not a tensor"
    rank = len(shape) if shape is not None else None
    if sql_type.base == "bytea":
        if not has_decode:
            return 'a bytea argument needs decoding options, e.g. {"<arg>": {"decode": "image"}}'
        return (
            None if elem in _FLOAT_TENSORS | {"uint8"} else f"image input must be float or uint8, not {elem}"
        )
    if sql_type.base == "text":
        if elem != "string":
            return f"expected a string tensor, found {elem}"
        return None if rank in (None, 1, 2) else f"expected a string tensor of rank 1 or 2, found rank {rank}"
    if sql_type.base == "bool":
        return None if elem == "bool" else f"expected a bool tensor, found {elem}"
    if elem not in _NUMERIC_TENSORS:
        return f"expected a numeric tensor, found {elem}"
    if sql_type.is_array:
        return (
            None if rank in (None, 2) else f"an array argument feeds a rank-2 tensor [N,k], found rank {rank}"
        )
    if rank not in (None, 1, 2):
        return f"a scalar argument feeds a tensor [N] or [N,1], found rank {rank}"
    if rank == 2 and shape[1] not in (1, None) and not isinstance(shape[1], str):
        return f"a scalar argument feeds a tensor [N,1], found [N,{shape[1]}]"
    return None


def output_mismatch(sql_type: SqlType, elem: str, rank: int | None) -> str | None:
    """Why a model output (after post-ops) cannot fill this SQL column, or None when it can."""
    if sql_type.is_array:
        if elem not in _NUMERIC_TENSORS:
            return f"expected a numeric vector output, found {elem}"
        return None if rank in (None, 2) else f"an array column needs a [N,k] output, found rank {rank}"
    if rank not in (None, 1, 2):
        return f"a scalar column needs one value per row, found rank {rank}"
    if sql_type.base == "text":
        return (
            None
            if elem == "string" or elem in _INT_TENSORS
            else f"expected string or int output, found {elem}"
        )
    if sql_type.base == "bool":
        return None if elem in ("bool", *_INT_TENSORS) else f"expected a bool output, found {elem}"
    if sql_type.base in ("int2", "int4", "int8"):
        return None if elem in _INT_TENSORS or elem == "bool" else f"expected an integer output, found {elem}"
    if sql_type.base in ("float4", "float8"):
        return None if elem in _NUMERIC_TENSORS else f"expected a numeric output, found {elem}"
    return f"a {sql_type.sql} column cannot hold model output {elem}"


def values_per_row(sql_type: SqlType, shape: tuple | None) -> str | None:
    """How many values per row an output of ``shape`` (after post-ops) gives a column that holds
    one, when that is not exactly one; None when it fits (or the rank is unknown)."""
    if sql_type.is_array or shape is None or len(shape) != 2 or shape[1] == 1:
        return None
    # a named or unknown width may be 1 or 10: taking column 0 of it would be a guess
    return str(shape[1]) if isinstance(shape[1], int) else "an unknown number of"


def shape_text(shape: tuple | None) -> str:
    """A shape as users read it: ``[N,10]`` (an unnamed batch axis called N, other unknown dims ?)."""
    if shape is None:
        return "[shape unknown]"
    dims = [str(d) if d is not None else "N" if i == 0 else "?" for i, d in enumerate(shape)]
    return "[" + ",".join(dims) + "]"
