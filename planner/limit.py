"""LIMIT without a full scan: run the models block range by block range of one table, stop
once the statement restricted to the ranges done has LIMIT rows.

Applies to a single SELECT with a constant LIMIT (and OFFSET) and no ORDER BY, grouping,
DISTINCT or aggregate at its top: then any LIMIT rows of the statement are a correct answer.
The *driver* is the base table that every row of the statement comes from: the first FROM
item, followed through inner and left joins (the preserved side) and plain subqueries
(inlined views, chains of them). A guard ``driver.ctid >= lo AND driver.ctid < hi`` (a TID
range scan, no index needed) sits in the driver's level; each batch materializes every call
site of the guarded statement, so the statement restricted to the blocks done reads only
materialized outputs and Postgres runs it as it is, strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast
from pglast.enums import JoinType

from planner.rewrite.ast_util import add_conjuncts, has_aggregates, is_plain_select, parse_condition, render

FIRST_BLOCKS = 1
MAX_BLOCK = 0xFFFFFFFF  # the largest block number a tid can hold: "to the end of the table"


@dataclass
class LimitPlan:
    statement: ast.SelectStmt  # the planning statement, guard included
    limit: int  # rows the statement returns once the blocks done hold enough (its LIMIT)
    table: str  # the driver, as the statement names it (for its size)
    guard: ast.BoolExpr  # its two tid constants are set per batch

    def set_range(self, lo: int, hi: int | None) -> None:
        low, high = self.guard.args
        _set_tid(low, lo)
        _set_tid(high, MAX_BLOCK if hi is None else hi)

    def sql(self) -> str:
        return render(self.statement)

    def count_sql(self) -> str:
        return f"SELECT count(*) FROM ({self.sql()}) AS sieve_limit_check"

    def blocks_sql(self) -> str:
        name = self.table.replace("'", "''")
        return f"SELECT pg_catalog.pg_relation_size('{name}'::regclass) / current_setting('block_size')::int"


def plan_limit(statements: list) -> LimitPlan | None:
    """A LIMIT plan for the (rewritten) statement, its guard added; None when it does not apply."""
    if len(statements) != 1:
        return None
    stmt = statements[0]
    if not _limited_select(stmt):
        return None
    limit = _constant(stmt.limitCount)
    offset = _constant(stmt.limitOffset) if stmt.limitOffset is not None else 0
    if limit is None or offset is None:
        return None  # LIMIT ALL, or a value known only at run time
    found = _driver(stmt)
    if found is None:
        return None
    level, table = found
    name = table.alias.aliasname if table.alias is not None else table.relname
    ref = '"' + name.replace('"', '""') + '".ctid'
    guard = parse_condition(f"{ref} >= '(0,0)'::tid AND {ref} < '(1,0)'::tid")
    add_conjuncts(level, [guard])
    named = ast.RangeVar(relname=table.relname, schemaname=table.schemaname, inh=True, relpersistence="p")
    return LimitPlan(stmt, limit, render(named), guard)


@dataclass
class LimitRun:
    """How a LIMIT plan ran: for EXPLAIN ANALYZE and the query log."""

    blocks: int  # the driver's size when the run started
    blocks_done: int = 0
    stopped: bool = False  # early: the rest of the table was never read


def _limited_select(stmt) -> bool:
    if not isinstance(stmt, ast.SelectStmt) or stmt.op.name != "SETOP_NONE" or stmt.limitCount is None:
        return False
    if stmt.sortClause or stmt.groupClause or stmt.distinctClause or stmt.havingClause:
        return False
    if stmt.windowClause or stmt.withClause is not None or stmt.lockingClause:
        return False
    return not has_aggregates(stmt.targetList or ())


def _driver(stmt: ast.SelectStmt) -> tuple[ast.SelectStmt, ast.RangeVar] | None:
    """(level, table) of the base table every row of ``stmt`` comes from, or None."""
    level = stmt
    while level.fromClause:
        item = level.fromClause[0]
        while isinstance(item, ast.JoinExpr):
            if item.jointype in (JoinType.JOIN_INNER, JoinType.JOIN_LEFT):
                item = item.larg
            elif item.jointype == JoinType.JOIN_RIGHT:
                item = item.rarg
            else:
                return None
        if isinstance(item, ast.RangeVar):
            return (level, item) if item.inh is not False else None
        if isinstance(item, ast.RangeSubselect) and not item.lateral and _plain(item.subquery):
            level = item.subquery
            continue
        return None
    return None


def _plain(query) -> bool:
    return is_plain_select(query) and not query.lockingClause


def _set_tid(comparison: ast.A_Expr, block: int) -> None:
    cast = comparison.rexpr  # '(b,0)'::tid
    cast.arg.val.sval = f"({block},0)"


def _constant(node) -> int | None:
    """An integer LIMIT/OFFSET: a literal, or a bound parameter's value ('5'::int8)."""
    if isinstance(node, ast.TypeCast) and isinstance(node.arg, ast.A_Const):
        value = node.arg.val
        text = getattr(value, "sval", None) if isinstance(value, ast.String) else None
        if text is not None and text.strip().lstrip("-").isdigit():
            return int(text)
        node = node.arg
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer):
        return node.val.ival
    return None
