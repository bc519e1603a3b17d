"""Reading ``CREATE [OR REPLACE] FUNCTION … LANGUAGE onnx`` (DROP and ALTER: function_ddl.py).

Postgres's grammar already accepts ``AS 'file', 'link symbol'`` (the C-function form), so pglast
parses the statement; the second string carries SieveDB's JSON options.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pglast import ast
from pglast.enums import FunctionParameterMode

from planner.labels.definition import check_labels_spec, is_labels_function
from planner.model_spec import INVALID_DEFINITION, INVALID_PARAMETER, SCALAR_COLUMN, Binding, ModelSpec
from planner.outcome import PlanError
from planner.sqltypes import SqlType

FEATURE_NOT_SUPPORTED = "0A000"


@dataclass(frozen=True)
class CreateModel:
    spec: ModelSpec
    replace: bool


def is_onnx_function(stmt: ast.Node) -> bool:
    if not isinstance(stmt, ast.CreateFunctionStmt):
        return False
    return any(o.defname == "language" and o.arg.sval.lower() == "onnx" for o in stmt.options or ())


def is_model_function(stmt: ast.Node) -> bool:
    """CREATE FUNCTION … LANGUAGE onnx or LANGUAGE labels (planner/labels): SieveDB's to run."""
    return is_onnx_function(stmt) or is_labels_function(stmt)


def read_create(stmt: ast.CreateFunctionStmt) -> CreateModel:
    name = _function_name(stmt.funcname)
    args, columns = [], []
    for param in stmt.parameters or ():
        sql_type = _sql_type(param.argType, param.name or "?")
        if param.mode == FunctionParameterMode.FUNC_PARAM_TABLE:
            columns.append((param.name, sql_type))
        elif param.mode in (FunctionParameterMode.FUNC_PARAM_DEFAULT, FunctionParameterMode.FUNC_PARAM_IN):
            if not param.name:
                raise PlanError(INVALID_DEFINITION, f"every argument of model function {name} needs a name")
            args.append((param.name, sql_type))
        else:
            raise PlanError(FEATURE_NOT_SUPPORTED, "model functions take IN arguments only")
    opts = {o.defname: o.arg for o in stmt.options or ()}
    if "as" not in opts:
        what = "'instructions'" if is_labels_function(stmt) else "'model.onnx'"
        language = "labels" if is_labels_function(stmt) else "onnx"
        raise PlanError(INVALID_DEFINITION, f"function {name}: LANGUAGE {language} needs AS {what}")
    path, options = _as_clause(opts["as"])
    returns_table = bool(columns)
    if not returns_table:
        if stmt.returnType is None or stmt.returnType.setof:
            raise PlanError(INVALID_DEFINITION, "a model function RETURNS a type or RETURNS TABLE (...)")
        columns = [(SCALAR_COLUMN, _sql_type(stmt.returnType, "return"))]
    spec = ModelSpec(
        name=name,
        args=args,
        returns_table=returns_table,
        bindings=_bindings(name, columns, options, returns_table),
        path=path,
        options=options,
        cost=_cost(opts.get("cost")),
        row_index=options.get("rows") == "row_index",
    )
    if is_labels_function(stmt):
        check_labels_spec(spec)
    return CreateModel(spec=spec, replace=bool(stmt.replace))


def _function_name(parts: Any) -> str:
    names = [p.sval for p in parts]
    if len(names) > 2 or (len(names) == 2 and names[0] != "public"):
        raise PlanError(
            FEATURE_NOT_SUPPORTED, f"model functions live in schema public, not {'.'.join(names)}"
        )
    return names[-1]


def _sql_type(type_name: ast.TypeName, what: str) -> SqlType:
    names = [n.sval for n in type_name.names]
    try:
        return SqlType.from_names(names, bool(type_name.arrayBounds))
    except ValueError as exc:
        raise PlanError(INVALID_DEFINITION, f"{what}: {exc}") from None


def _as_clause(arg: Any) -> tuple[str, dict[str, Any]]:
    parts = [p.sval for p in (arg if isinstance(arg, tuple | list) else [arg])]
    path, options = parts[0], {}
    if len(parts) > 1 and parts[1].strip():
        try:
            options = json.loads(parts[1])
        except json.JSONDecodeError as exc:
            raise PlanError(INVALID_PARAMETER, f"model options are not valid JSON: {exc}") from None
        if not isinstance(options, dict):
            raise PlanError(INVALID_PARAMETER, "model options must be a JSON object")
    return path, options


def _bindings(name: str, columns: list, options: dict, returns_table: bool) -> list[Binding]:
    mapping = options.get("outputs", {})
    if not isinstance(mapping, dict):
        raise PlanError(INVALID_PARAMETER, '"outputs" must map result columns to model outputs')
    bindings = []
    for column, sql_type in columns:
        key = column if returns_table else name
        target = mapping.get(key, column if returns_table else options.get("output"))
        post: tuple = ()
        if isinstance(target, dict):
            post = target.get("post", [])
            post = tuple(post if isinstance(post, list) else [post])
            target = target.get("output", column if returns_table else options.get("output"))
        bindings.append(Binding(column, sql_type, target, post))
    return bindings


def _cost(node: Any) -> float | None:
    if node is None:
        return None
    return float(getattr(node, "ival", None) or getattr(node, "fval", 0))
