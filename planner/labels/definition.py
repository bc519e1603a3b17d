"""Reading ``CREATE [OR REPLACE] FUNCTION f(args) RETURNS t LANGUAGE labels AS 'instructions',
'{"choices": [...]}'``: a model whose outputs are labels people give.

The function is registered like an ONNX model (``sieve.models``, a cache table, an installed
SQL function reading it), with no file: the instructions and choices are its options. A label
must be shown as a button and compared with what a query asks, so the result is one scalar of
a type with a plain text form (boolean, integers, floats, text); choices are checked against it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pglast import ast

from planner.model_checks import INVALID_DEFINITION, INVALID_PARAMETER
from planner.model_spec import SCALAR_COLUMN, Binding, ModelSpec
from planner.outcome import PlanError
from planner.sqlstate import FEATURE_NOT_SUPPORTED

LANGUAGE = "labels"
PATH = "(labels)"  # sieve.models.path of a labels function: it has no file
_SHOWABLE = {"bool", "int2", "int4", "int8", "float4", "float8", "text"}
_INT_RANGE = {"int2": 2**15, "int4": 2**31, "int8": 2**63}
_OPTION_KEYS = {"choices"}


def is_labels_function(stmt: ast.Node) -> bool:
    if not isinstance(stmt, ast.CreateFunctionStmt):
        return False
    return any(o.defname == "language" and o.arg.sval.lower() == LANGUAGE for o in stmt.options or ())


def check_labels_spec(spec: ModelSpec) -> None:
    """Complete a spec read from ``CREATE FUNCTION … LANGUAGE labels`` (see planner.model_ddl):
    the AS clause's first string is the instructions, the second the options."""
    if spec.returns_table:
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            f"function {spec.name}: LANGUAGE labels returns one value per input, not a table",
            hint="declare RETURNS boolean, an integer, a float or text",
        )
    result = spec.bindings[0].sql_type
    if result.is_array or result.base not in _SHOWABLE:
        raise PlanError(
            INVALID_DEFINITION,
            f"function {spec.name}: LANGUAGE labels cannot return {result.sql}: a label is shown as a "
            "choice and compared, so it is a boolean, an integer, a float or text",
        )
    instructions = spec.path.strip()
    if not instructions:
        raise PlanError(
            INVALID_DEFINITION,
            f"function {spec.name}: LANGUAGE labels needs instructions",
            hint="AS 'Is there a hummingbird in this picture?', '{\"choices\": [true, false]}'",
        )
    unknown = sorted(set(spec.options) - _OPTION_KEYS)
    if unknown:
        raise PlanError(
            INVALID_PARAMETER,
            f"function {spec.name}: unknown option(s) {unknown} for LANGUAGE labels; "
            f"it takes {sorted(_OPTION_KEYS)}",
        )
    choices = check_choices(spec.name, result.base, spec.options.get("choices"))
    spec.language = LANGUAGE
    spec.path = PATH
    spec.options = {"instructions": instructions, "choices": choices}
    spec.bindings = [Binding(SCALAR_COLUMN, result, "label")]
    spec.max_rows = 1
    spec.signature = {"inputs": [], "outputs": []}
    spec.content_hash = _content_hash(spec)


def check_choices(name: str, base: str, choices: Any) -> list:
    """The choices, each a JSON value of the result type; a boolean defaults to [true, false]."""
    if choices is None:
        if base == "bool":
            return [True, False]
        raise PlanError(
            INVALID_DEFINITION,
            f"function {name}: LANGUAGE labels needs the choices a labeller picks from",
            hint='e.g. AS \'instructions\', \'{"choices": ["cat", "dog"]}\'',
        )
    if not isinstance(choices, list) or not choices:
        raise PlanError(INVALID_DEFINITION, f'function {name}: "choices" must be a non-empty JSON array')
    for choice in choices:
        why = _not_of_type(choice, base)
        if why:
            raise PlanError(INVALID_DEFINITION, f"function {name}: choice {json.dumps(choice)} {why}")
    if len({json.dumps(c) for c in choices}) != len(choices):
        raise PlanError(INVALID_DEFINITION, f"function {name}: the choices repeat a value")
    return choices


def _not_of_type(value: Any, base: str) -> str | None:
    if base == "bool":
        return None if isinstance(value, bool) else "is not a boolean (true or false)"
    if base == "text":
        return None if isinstance(value, str) else "is not a string"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"is not a number (the function returns {base})"
    if base in _INT_RANGE:
        if not isinstance(value, int):
            return f"is not a whole number (the function returns {base})"
        if not -_INT_RANGE[base] <= value < _INT_RANGE[base]:
            return f"is out of range for {base}"
    return None


def choice_text(value: Any) -> str:
    """A choice (or a label) as the text Postgres casts to the result type."""
    return value if isinstance(value, str) else json.dumps(value)


def _content_hash(spec: ModelSpec) -> str:
    """What makes a version: a changed question or set of answers is another function."""
    described = {
        "instructions": spec.options["instructions"],
        "choices": spec.options["choices"],
        "args": [[n, t.sql] for n, t in spec.args],
        "result": spec.bindings[0].sql_type.sql,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
