"""The ``sieve.*`` setting names, and what a statement that names them is forwarded as.

Postgres accepts any dotted name as a placeholder setting, so ``SET sieve.recal_target = 0.9``
(a typo) would succeed and the query after it would silently run exactly; and ``SHOW
sieve.budget`` fails until something sets it. Postgres stays the one that answers: a statement
naming an unknown ``sieve.*`` setting (SET, SET LOCAL, RESET, SHOW, ``SET`` clauses of ALTER
ROLE/DATABASE/SYSTEM and CREATE FUNCTION, ``set_config('sieve.…', …)``) is forwarded as a ``DO``
block that raises 42704 with the nearest valid name: a transaction block aborts and the session
carries on exactly as after Postgres's own error for an unknown parameter (the error also has a
PL/pgSQL CONTEXT line, and needs the default language plpgsql). ``SHOW`` of a valid name is
forwarded as a SELECT of the session's value, or the default while it has none: it sees values
from ALTER ROLE/DATABASE and the startup packet too, and its command tag is SELECT, not SHOW.
"""

from __future__ import annotations

import difflib

from pglast import ast, parse_sql
from pglast.enums import VariableSetKind
from pglast.visitors import Visitor

from planner.approx.settings import SHOWN_DEFAULTS
from planner.install import quote_ident

PREFIX = "sieve."
UNDEFINED_OBJECT = "42704"
# sieve.lenient is SieveDB's own (lenient reads of model caches, set per statement)
DEFAULTS: dict[str, str] = {PREFIX + name: value for name, value in SHOWN_DEFAULTS.items()}
DEFAULTS[PREFIX + "lenient"] = "off"
# a query of (key columns..., confidence) that sieve.label_candidates(n, 'uncertainty') ranks by
DEFAULTS[PREFIX + "uncertainty_query"] = ""
# how long a statement that needs human labels waits for them (an interval; 0: fail with SV001
# at once), and how long a labelling link lasts (planner/labels)
DEFAULTS[PREFIX + "label_wait"] = "0"
DEFAULTS[PREFIX + "labelling_link_ttl"] = "7 days"
_NAMED = (VariableSetKind.VAR_SET_VALUE, VariableSetKind.VAR_SET_DEFAULT, VariableSetKind.VAR_SET_CURRENT)


def review(sql: str) -> str | None:
    """The SQL to forward in place of ``sql``, or None to forward it unchanged (also when pglast
    cannot parse it: Postgres then reports the syntax error itself)."""
    try:
        statements = parse_sql(sql)
    except Exception:
        return None
    pieces, done, changed = [], 0, False
    for raw in statements:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(sql)
        unknown = unknown_names(raw.stmt)
        if unknown:
            # the statements before it run, this one fails, the rest never run: Postgres's order
            return "".join([*pieces, sql[done:start], refusal_sql(unknown[0])])
        shown = _shown_name(raw.stmt)
        if shown is not None:
            pieces += [sql[done:start], show_sql(shown)]
            done, changed = end, True
    return "".join([*pieces, sql[done:]]) if changed else None


def unknown_names(stmt: ast.Node) -> list[str]:
    """The ``sieve.*`` setting names ``stmt`` sets, resets or shows that do not exist."""
    finder = _SettingNames()
    finder(stmt)
    # a prepared statement with parameters keeps its parameter count only as it is
    names = finder.names if finder.parameters else finder.names + finder.calls
    return [n for n in names if n.lower().startswith(PREFIX) and n.lower() not in DEFAULTS]


def refusal_sql(name: str) -> str:
    """A statement that fails as Postgres fails for an unknown parameter, with a hint."""
    # compared without the shared "sieve." that would make every name look close
    short = [n.removeprefix(PREFIX) for n in DEFAULTS]
    close = difflib.get_close_matches(name.lower().removeprefix(PREFIX), short, n=1)
    hint = f'did you mean "{PREFIX}{close[0]}"?' if close else f"sieve.* settings are: {', '.join(DEFAULTS)}"
    message = f'unrecognized configuration parameter "{name}"'  # Postgres's own words
    body = (
        f"BEGIN RAISE EXCEPTION USING ERRCODE = '{UNDEFINED_OBJECT}', "
        f"MESSAGE = {_literal(message)}, HINT = {_literal(hint)}; END"
    )
    return f"DO {_dollar_quote(body)}"


def show_sql(name: str) -> str:
    """``SHOW name`` of a valid setting: the session's value, or the default while it has none."""
    default = DEFAULTS[name.lower()]
    value = f"pg_catalog.current_setting({_literal(name)}, true)"
    return f"SELECT COALESCE(NULLIF({value}, ''), {_literal(default)}) AS {quote_ident(name)}"


def _shown_name(stmt: ast.Node) -> str | None:
    if isinstance(stmt, ast.VariableShowStmt) and stmt.name.lower() in DEFAULTS:
        return stmt.name
    return None


class _SettingNames(Visitor):
    """Collects the setting names a statement sets, resets or shows."""

    def __init__(self) -> None:
        self.names: list[str] = []  # SET, RESET, SHOW
        self.calls: list[str] = []  # set_config('sieve....', ...)
        self.parameters = False

    def visit_VariableSetStmt(self, ancestors, node: ast.VariableSetStmt) -> None:
        # ALTER ROLE/DATABASE ... RESET sieve.typo clears what an older SieveDB let through
        nested = ancestors.parent is not None
        if node.kind in _NAMED or (node.kind == VariableSetKind.VAR_RESET and not nested):
            self.names.append(node.name)

    def visit_VariableShowStmt(self, ancestors, node: ast.VariableShowStmt) -> None:
        self.names.append(node.name)

    def visit_FuncCall(self, ancestors, node: ast.FuncCall) -> None:
        name = [n.sval for n in node.funcname]
        first = node.args[0] if node.args else None
        literal = isinstance(first, ast.A_Const) and isinstance(first.val, ast.String)
        if literal and name[-1] == "set_config" and name[0] in ("set_config", "pg_catalog"):
            self.calls.append(first.val.sval)

    def visit_ParamRef(self, ancestors, node: ast.ParamRef) -> None:
        self.parameters = True


def _literal(text: str) -> str:
    """An escape-string literal: the same text whatever standard_conforming_strings says."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _dollar_quote(body: str) -> str:
    tag = "$sieve$"
    while tag in body:
        tag = tag[:-1] + "_$"
    return f"{tag}{body}{tag}"
