"""Checks of a model function's definition that need no database: every option key means
something, and each SQL argument feeds the model input of its name.

Unknown keys are errors because a misspelt option is otherwise ignored and the function
silently computes something else (a top-level ``"post"`` used to leave the raw output in place).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any

from planner.outcome import PlanError

INVALID_DEFINITION = "42P13"
INVALID_PARAMETER = "22023"  # Postgres's code for an unrecognized option, e.g. a reloption

SCALAR_KEYS = ("output", "outputs", "rows")
TABLE_KEYS = ("outputs", "rows", "max_rows")
BINDING_KEYS = ("output", "post")
ROWS_VALUES = ("row_index",)
MAX_ROWS_LIMIT = 2**31 - 1  # the cache's ordinal is an int4
_OUTPUTS_NOTE = "its keys are the result columns, or the function's name when it returns one value"


def check_option_keys(
    name: str, args: Sequence[str], columns: Sequence[str] | None, options: dict[str, Any]
) -> None:
    """Raise PlanError (22023) for an option key that no part of SieveDB reads. ``columns`` are
    the result columns of a TABLE function, None for a function that returns one value."""
    top = SCALAR_KEYS if columns is None else TABLE_KEYS
    for key, value in options.items():
        if key in args:
            if not isinstance(value, dict):
                raise PlanError(
                    INVALID_PARAMETER,
                    f'options of argument "{key}" must be a JSON object, e.g. {{"decode": "image"}}',
                )
        elif key == "post":
            raise PlanError(
                INVALID_PARAMETER,
                'model option "post" belongs inside an output binding',
                hint=_post_hint(columns, options),
            )
        elif key == "max_rows" and columns is None:
            raise PlanError(
                INVALID_PARAMETER,
                'model option "max_rows" is for TABLE functions: '
                "a function that returns one value gives one row per input",
            )
        elif key not in top:
            raise _unknown(f'unknown model option "{key}"', key, [*top, *args], _top_note(key, columns))
    rows = options.get("rows")
    if rows is not None and rows not in ROWS_VALUES:
        raise PlanError(INVALID_PARAMETER, f'model option "rows" must be "row_index", not {json.dumps(rows)}')
    if "max_rows" in options:
        _check_max_rows(options["max_rows"])
    if "output" in options:
        _check_binding('"output"', options["output"], named=True)
    # model_ddl reads "outputs" by result column, or by the function's own name for one value
    _check_outputs([name] if columns is None else list(columns), options.get("outputs"))


def _check_max_rows(value: Any) -> None:
    """A bound on the rows one input may give: a whole number a cache ordinal can hold."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ROWS_LIMIT:
        raise PlanError(
            INVALID_PARAMETER,
            f'model option "max_rows" must be a whole number from 1 to {MAX_ROWS_LIMIT}, '
            f"not {json.dumps(value)}",
            hint="it bounds the rows the model may give one input, e.g. its number of detection slots",
        )


def _check_outputs(keys: list[str], mapping: Any) -> None:
    if not isinstance(mapping, dict):
        return  # absent, or model_ddl already refused it
    for key, target in mapping.items():
        if key not in keys:
            raise _unknown(f'unknown key "{key}" in "outputs"', key, keys, _OUTPUTS_NOTE)
        _check_binding(f'"outputs" of "{key}"', target, named=False)


def _check_binding(where: str, target: Any, named: bool) -> None:
    """A binding names a model output, or is {"output": name, "post": ops}; a table column's
    binding may leave out the name (the output named like the column)."""
    if isinstance(target, dict):
        extra = [k for k in target if k not in BINDING_KEYS]
        if extra:
            raise _unknown(f'unknown key "{extra[0]}" in {where}', extra[0], BINDING_KEYS)
        target = target.get("output", None if named else "")
    if not isinstance(target, str):
        raise PlanError(
            INVALID_PARAMETER,
            f'{where} must name a model output, or be {{"output": "name", "post": [...]}}',
        )


def _unknown(message: str, key: str, valid: Sequence[str], note: str = "") -> PlanError:
    close = difflib.get_close_matches(key, valid, n=1) or difflib.get_close_matches(
        key.lower(), [v.lower() for v in valid], n=1
    )
    listed = ", ".join(f'"{v}"' for v in valid)
    hint = f'did you mean "{close[0]}"?' if close else None
    return PlanError(
        INVALID_PARAMETER,
        f"{message}; valid: {listed}" + (f" ({note})" if note else ""),
        hint=hint,
    )


def _top_note(key: str, columns: Sequence[str] | None) -> str:
    if key == "output" and columns is not None:
        return 'a TABLE function binds its columns with "outputs": {"column": "model output"}'
    return "an argument's name sets its preprocessing"


def _post_hint(columns: Sequence[str] | None, options: dict[str, Any]) -> str:
    post = options["post"]
    if columns is not None:
        binding = {"outputs": {columns[0]: {"output": "<model output>", "post": post}}}
    else:
        output = options.get("output")
        if isinstance(output, dict):
            output = output.get("output")
        binding = {"output": {"output": output or "<model output>", "post": post}}
    return f"write it as '{json.dumps(binding)}'"


def order_inputs(name: str, args: Sequence[str], inputs: Sequence[Any]) -> list[Any]:
    """The model inputs (objects with a ``name``) in the order of the SQL arguments that feed them.

    Arguments bind by name when their names are the inputs' names (in any order, compared
    case-insensitively when that is unambiguous, since SQL folds unquoted names to lower case),
    and by position when no name matches (exporters often name inputs ``input_0``...). Some names
    matching and others not is an error: the author meant one of the two and we cannot tell which."""
    if len(inputs) < 2:
        return list(inputs)
    by_name = _input_names(inputs)
    matched = [a for a in args if _fold(a, by_name) in by_name]
    if not matched:
        return list(inputs)
    if len(matched) == len(args) and len({_fold(a, by_name) for a in args}) == len(args):
        return [by_name[_fold(a, by_name)] for a in args]
    raise PlanError(
        INVALID_DEFINITION,
        f"arguments of function {name} ({', '.join(args)}) match some model input names but not all; "
        f"the model's inputs are: {', '.join(t.name for t in inputs)}",
        hint="name each argument after the model input it feeds (any order), "
        "or name none of them so that they bind by position",
    )


def _input_names(inputs: Sequence[Any]) -> dict[str, Any]:
    folded = {t.name.lower(): t for t in inputs}
    if len(folded) == len(inputs):
        return folded
    return {t.name: t for t in inputs}  # "x" and "X" both: only the exact name binds


def _fold(arg: str, by_name: dict[str, Any]) -> str:
    return arg if arg in by_name else arg.lower()
