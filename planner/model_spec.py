"""A model function as declared by ``CREATE FUNCTION … LANGUAGE onnx``, checked against its file."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.preprocess import check_preprocess
from planner.model_checks import INVALID_DEFINITION, check_option_keys, order_inputs
from planner.model_checks import INVALID_PARAMETER as INVALID_PARAMETER  # model_ddl imports it from here
from planner.outcome import PlanError
from planner.sqltypes import SqlType, input_mismatch, output_mismatch, shape_text, values_per_row

UNDEFINED_FILE = "58P01"
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
    # The most rows the model may give one input (enforced where its outputs become rows,
    # planner.batches): what lets an aggregate over its rows be certified. None: no bound known.
    max_rows: int | None = None
    # "onnx", or "labels": outputs are labels people give (planner/labels); options then hold
    # "instructions" and "choices"
    language: str = "onnx"

    @property
    def is_labels(self) -> bool:
        return self.language == "labels"

    def __post_init__(self) -> None:
        if not self.row_index:  # one row per input by construction
            self.max_rows = 1

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
            "max_rows": self.max_rows,
            "model": self.signature,
            "language": self.language,
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
        options = _json(row["options"])
        row_index = definition["row_index"]
        # rows written before the bound existed lack it: derive it as CREATE FUNCTION would now
        max_rows = definition.get("max_rows", row_bound(row_index, options, definition["model"]))
        return cls(
            name=row["name"],
            args=[(n, SqlType.from_dict(t)) for n, t in definition["args"]],
            returns_table=definition["returns_table"],
            bindings=[Binding(c, SqlType.from_dict(t), o, tuple(p)) for c, t, o, p in definition["bindings"]],
            path=row["path"],
            options=options,
            content_hash=row["content_hash"],
            version=row["version"],
            signature=definition["model"],
            row_index=row_index,
            id=row.get("id"),
            max_rows=max_rows,
            language=definition.get("language", "onnx"),
        )


def row_bound(row_index: bool, options: dict[str, Any], signature: dict[str, Any]) -> int | None:
    """The most rows a model may give one input: 1 unless its first output is a row index; else
    the declared ``"max_rows"`` and the row-index output's fixed first dimension (a batch's rows
    all come from one run, so no input gets more), the smaller of the two when both exist."""
    if not row_index:
        return 1
    outputs = signature.get("outputs") or [{}]
    shape = outputs[0].get("shape") or [None]
    bounds = [b for b in (options.get("max_rows"), shape[0]) if isinstance(b, int) and b >= 1]
    return min(bounds) if bounds else None


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
    """Check the declared SQL signature against the ONNX file and fill in the output bindings.
    ``spec.signature["inputs"]`` lists the model inputs in the order of the SQL arguments."""
    columns = [b.column for b in spec.bindings] if spec.returns_table else None
    check_option_keys(spec.name, [a for a, _ in spec.args], columns, spec.options)
    if len(signature.inputs) != len(spec.args):
        names = ", ".join(f"{t.name} ({t.type_str})" for t in signature.inputs)
        raise PlanError(
            INVALID_DEFINITION,
            f"function {spec.name} declares {len(spec.args)} argument(s) but the model takes "
            f"{len(signature.inputs)} input(s): {names}",
        )
    inputs = order_inputs(spec.name, [a for a, _ in spec.args], signature.inputs)
    for (arg, sql_type), tensor in zip(spec.args, inputs, strict=True):
        _check_argument(arg, sql_type, tensor, spec.options.get(arg))
    outputs = {t.name: t for t in signature.outputs}
    spec.bindings = [_check_binding(spec, b, outputs) for b in spec.bindings]
    spec.signature = {
        "inputs": [_tensor_dict(t) for t in inputs],
        "outputs": [_tensor_dict(t) for t in signature.outputs],
    }
    spec.max_rows = row_bound(spec.row_index, spec.options, spec.signature)


def _check_argument(arg: str, sql_type: SqlType, tensor, opts: dict | None) -> None:
    if opts is not None:  # check_option_keys saw that it is an object
        try:
            check_preprocess(opts)
        except ValueError as exc:
            raise PlanError(INVALID_DEFINITION, f'options of argument "{arg}": {exc}') from None
    why = input_mismatch(sql_type, tensor, opts is not None)
    if why:
        raise PlanError(
            INVALID_DEFINITION,
            f'argument "{arg}" of type {sql_type.sql} does not match model input '
            f'"{tensor.name}" ({tensor.type_str}): {why}',
        )


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
    elem, shape = _after_post_ops(tensor, binding.post)
    described = f"{tensor.type_str} {shape_text(_shape(tensor))}{_post_text(binding.post)}"
    why = output_mismatch(binding.sql_type, elem, None if shape is None else len(shape))
    if why:
        raise PlanError(
            INVALID_DEFINITION,
            f'{_declared(spec, binding)} does not match model output "{output}" ({described}): {why}',
        )
    width = values_per_row(binding.sql_type, shape)
    if width is not None:
        raise PlanError(
            INVALID_DEFINITION,
            f'{_declared(spec, binding)} does not match model output "{output}" ({described}): '
            f"it has {width} values per row and a {binding.sql_type.sql} holds one",
            hint=_pick_one_hint(spec, binding, output),
        )
    return Binding(binding.column, binding.sql_type, output, binding.post)


def _declared(spec: ModelSpec, binding: Binding) -> str:
    if spec.returns_table:
        return f'column "{binding.column}" of type {binding.sql_type.sql}'
    return f"function {spec.name} returning {binding.sql_type.sql}"


def _pick_one_hint(spec: ModelSpec, binding: Binding, output: str) -> str:
    """Options that make the output one value per row: a post-op chosen for the declared type."""
    sql_type = binding.sql_type
    op: Any = "argmax" if not sql_type.is_numeric or sql_type.base.startswith("int") else "max"
    target = {"output": output, "post": [*binding.post, op]}
    options = {"outputs": {binding.column: target}} if spec.returns_table else {"output": target}
    hint = (
        f"pick one value per row with a post-op, e.g. '{json.dumps(options)}': \"argmax\" gives "
        'the index of the largest value (a class), "max" the largest value (its score), '
        '{"op": "index", "index": i} the value at position i (the score of class i)'
    )
    if sql_type.is_numeric:
        hint += f"; or declare {SqlType(sql_type.base, True).sql} to return them all"
    return hint


def _shape(tensor) -> tuple | None:
    return ("N", None) if tensor.kind == "sequence" else tensor.shape


def _after_post_ops(tensor, post: tuple[Any, ...]) -> tuple[str, tuple | None]:
    """Element type and shape of an output after its post-ops (which work on the last axis)."""
    # a scikit-learn ZipMap is one {label: p} map per row: an [N, classes] matrix of floats
    elem = "float32" if tensor.kind == "sequence" else tensor.elem_type
    shape = _shape(tensor)
    for op in post:
        name = _check_post_op(op, shape)
        if name == "argmax":
            elem = "int64"
        if name in ("argmax", "max", "index") and shape is not None:
            shape = shape[:-1]
    return elem, shape


def _check_post_op(op: Any, shape: tuple | None) -> str:
    name = op if isinstance(op, str) else op.get("op") if isinstance(op, dict) else None
    if not isinstance(name, str) or name not in _POST_OPS:
        raise PlanError(
            INVALID_DEFINITION, f"unknown post-op {json.dumps(op)}; use one of {sorted(_POST_OPS)}"
        )
    if shape is not None and len(shape) < 2:
        raise PlanError(
            INVALID_DEFINITION,
            f"post-op {json.dumps(op)} works on a vector per row; the output is {shape_text(shape)}",
        )
    extra = sorted(set(op) - {"op", "index"}) if isinstance(op, dict) else []
    if extra:
        raise PlanError(INVALID_DEFINITION, f"post-op {json.dumps(op)} has unknown key(s) {extra}")
    if name == "index":
        _check_index(op, shape)
    return name


def _check_index(op: Any, shape: tuple | None) -> None:
    index = op.get("index") if isinstance(op, dict) else None
    if not isinstance(index, int) or isinstance(index, bool):
        raise PlanError(
            INVALID_DEFINITION, 'post-op "index" needs {"op": "index", "index": i}, i a whole number'
        )
    width = shape[-1] if shape is not None else None
    if isinstance(width, int) and not -width <= index < width:
        raise PlanError(
            INVALID_DEFINITION,
            f"post-op {json.dumps(op)} is out of range: the output has {width} values per row",
        )


def _post_text(post: tuple[Any, ...]) -> str:
    return f" after {json.dumps(list(post))}" if post else ""
