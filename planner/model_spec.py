"""A model function as declared by ``CREATE FUNCTION … LANGUAGE onnx``, checked against its file."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.preprocess import check_preprocess
from planner.outcome import PlanError
from planner.sqltypes import SqlType, input_mismatch, output_mismatch

INVALID_DEFINITION = "42P13"
UNDEFINED_FILE = "58P01"
INVALID_PARAMETER = "22023"
PROGRAM_LIMIT_EXCEEDED = "54000"
SCALAR_COLUMN = "value"  # cache column of a function that returns one value

_POST_OPS = {"argmax", "max", "softmax", "index"}


@dataclass(frozen=True)
class Binding:
    """Where one result column comes from: a model output and optional post-ops."""

    column: str
    sql_type: SqlType
    output: str
    post: tuple[Any, ...] = ()


@dataclass
class ModelSpec:
    name: str
    args: list[tuple[str, SqlType]]
    returns_table: bool
    bindings: list[Binding]
    path: str
    options: dict[str, Any] = field(default_factory=dict)
    cost: float | None = None
    content_hash: str = ""
    version: int = 1
    signature: dict[str, Any] = field(default_factory=dict)
    row_index: bool = False  # several result rows per input, keyed by the first output
    id: int | None = None  # sieve.models.id: names the model's storage (any name fits in 63 bytes)

    @property
    def cache_table(self) -> str:
        return cache_table_name(self.id, self.version)

    @property
    def stage_table(self) -> str:
        """The per-connection temporary table a batch is copied into before it joins the cache."""
        return "sieve_stage_" + self.cache_table.removeprefix("sieve_cache.")

    @property
    def key(self) -> str:
        # Databases of one cluster may each have a model of this name and version: the file's
        # hash keeps their worker sessions (and statistics) apart.
        return f"{self.name}@{self.version}#{self.content_hash[:16]}"

    def preprocess(self) -> dict[str, dict]:
        """Per model-input preprocessing, keyed by the ONNX input name."""
        inputs = self.signature.get("inputs", [])
        out = {}
        for (arg, _), model_input in zip(self.args, inputs, strict=False):
            opts = self.options.get(arg)
            if isinstance(opts, dict) and opts.get("decode"):
                out[model_input["name"]] = opts
        return out

    def to_row(self) -> dict[str, Any]:
        definition = {
            "args": [[n, t.to_dict()] for n, t in self.args],
            "returns_table": self.returns_table,
            "bindings": [[b.column, b.sql_type.to_dict(), b.output, list(b.post)] for b in self.bindings],
            "row_index": self.row_index,
            "model": self.signature,
        }
        return {
            "id": self.id,
            "name": self.name,
            "path": self.path,
            "content_hash": self.content_hash,
            "version": self.version,
            "signature": json.dumps(definition),
            "options": json.dumps(self.options),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelSpec:
        definition = _json(row["signature"])
        return cls(
            name=row["name"],
            args=[(n, SqlType.from_dict(t)) for n, t in definition["args"]],
            returns_table=definition["returns_table"],
            bindings=[Binding(c, SqlType.from_dict(t), o, tuple(p)) for c, t, o, p in definition["bindings"]],
            path=row["path"],
            options=_json(row["options"]),
            content_hash=row["content_hash"],
            version=row["version"],
            signature=definition["model"],
            row_index=definition["row_index"],
            id=row.get("id"),
        )


def cache_table_name(model_id: int | None, version: int) -> str:
    """``sieve_cache.m<id>_v<version>``: named by the model id, never by the (up to 63-byte) name,
    so that two names sharing a 61-byte prefix can never share a table."""
    if model_id is None:
        raise ValueError("a model's cache table needs the model's id")
    return f"sieve_cache.m{int(model_id)}_v{int(version)}"


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def resolve_path(path: str, models_dir: Path, max_bytes: int | None = None) -> Path:
    """The regular file ``path`` names inside ``models_dir``, symlinks resolved; relative paths
    are relative to ``models_dir``, absolute ones must resolve inside it. A missing file and a
    file outside the directory fail alike (see ``missing_file``), so that the answer says nothing
    of files the server may read and the user may not. A file over ``max_bytes`` is refused
    before anything reads it."""
    root = models_dir.resolve()
    try:
        resolved = (root / path).resolve(strict=True)  # an absolute ``path`` replaces ``root``
        st = resolved.stat() if resolved.is_relative_to(root) else None
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL byte ...
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise missing_file(path)
    if max_bytes is not None and st.st_size > max_bytes:
        raise PlanError(
            PROGRAM_LIMIT_EXCEEDED,
            f'model file "{path}" is {st.st_size:,} bytes, over the limit of {max_bytes:,} bytes',
            hint="the server's --max-model-bytes sets the limit",
        )
    return resolved


def missing_file(path: str) -> PlanError:
    """The one error for a model file that is missing, outside --models-dir, or not a file."""
    return PlanError(
        UNDEFINED_FILE,
        f'could not open model file "{path}": no such file in the models directory',
        hint="name a file inside the server's --models-dir, relative to it",
    )


def bind_signature(spec: ModelSpec, signature) -> None:
    """Check the declared SQL signature against the ONNX file and fill in the output bindings."""
    inputs = signature.inputs
    if len(inputs) != len(spec.args):
        names = ", ".join(f"{t.name} ({t.type_str})" for t in inputs)
        raise PlanError(
            INVALID_DEFINITION,
            f"function {spec.name} declares {len(spec.args)} argument(s) but the model takes "
            f"{len(inputs)} input(s): {names}",
        )
    for (arg, sql_type), tensor in zip(spec.args, inputs, strict=True):
        opts = spec.options.get(arg)
        if isinstance(opts, dict) and opts.get("decode"):
            try:
                check_preprocess(opts)
            except ValueError as exc:
                raise PlanError(INVALID_DEFINITION, f'options of argument "{arg}": {exc}') from None
        why = input_mismatch(sql_type, tensor, isinstance(opts, dict) and bool(opts.get("decode")))
        if why:
            raise PlanError(
                INVALID_DEFINITION,
                f'argument "{arg}" of type {sql_type.sql} does not match model input '
                f'"{tensor.name}" ({tensor.type_str}): {why}',
            )
    outputs = {t.name: t for t in signature.outputs}
    spec.bindings = [_check_binding(spec, b, outputs) for b in spec.bindings]
    spec.signature = {
        "inputs": [_tensor_dict(t) for t in signature.inputs],
        "outputs": [_tensor_dict(t) for t in signature.outputs],
    }


def _tensor_dict(t) -> dict[str, Any]:
    return {
        "name": t.name,
        "type": t.type_str,
        "elem": t.elem_type,
        "kind": t.kind,
        "shape": list(t.shape) if t.shape is not None else None,
    }


def _check_binding(spec: ModelSpec, binding: Binding, outputs: dict) -> Binding:
    output = binding.output
    if output is None:  # a scalar function with no mapping: the model's only output
        if len(outputs) != 1:
            raise PlanError(
                INVALID_DEFINITION,
                f"model of function {spec.name} has {len(outputs)} outputs ({', '.join(outputs)}); "
                "say which one it returns",
                hint=f"add options, e.g. AS '{Path(spec.path).name}', "
                f'\'{{"output": "{next(iter(outputs))}"}}\'',
            )
        output = next(iter(outputs))
    if output not in outputs:
        raise PlanError(
            INVALID_DEFINITION,
            f'column "{binding.column}" is bound to model output "{output}", which the model does not '
            f"have; its outputs are: {', '.join(outputs)}",
        )
    tensor = outputs[output]
    elem, rank = _after_post_ops(tensor, binding.post)
    why = output_mismatch(binding.sql_type, elem, rank)
    if why:
        raise PlanError(
            INVALID_DEFINITION,
            f'column "{binding.column}" of type {binding.sql_type.sql} does not match model output '
            f'"{output}" ({tensor.type_str}{_post_text(binding.post)}): {why}',
        )
    return Binding(binding.column, binding.sql_type, output, binding.post)


def _after_post_ops(tensor, post: tuple[Any, ...]) -> tuple[str, int | None]:
    if tensor.kind == "sequence":  # scikit-learn ZipMap: one {label: p} map per row
        elem, rank = "float32", 2
    else:
        elem, rank = tensor.elem_type, (len(tensor.shape) if tensor.shape is not None else None)
    for op in post:
        name = op if isinstance(op, str) else op.get("op")
        if name not in _POST_OPS:
            raise PlanError(INVALID_DEFINITION, f"unknown post-op {op!r}; use one of {sorted(_POST_OPS)}")
        if name == "argmax":
            elem = "int64"
        if name in ("argmax", "max", "index") and rank is not None:
            rank -= 1
    return elem, rank


def _post_text(post: tuple[Any, ...]) -> str:
    return f" after {list(post)}" if post else ""
