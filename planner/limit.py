"""LIMIT without a full scan: run the models block range by block range of one table, stop
once the statement restricted to the ranges done has LIMIT rows.

Applies to a single SELECT with a constant LIMIT (and OFFSET) and no grouping, DISTINCT or
aggregate at its top. Without ORDER BY any LIMIT rows of the statement are a correct answer.
With ORDER BY whose first key is a column of the driver (through views), the batches are the
driver's first n rows in that order instead of block ranges (``key <= bound``, n doubling): the
statement restricted to them holds the first LIMIT rows of the whole answer once it has LIMIT
rows, since every row ordered before the bound is in it (ties included).
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

from planner.install import quote_ident
from planner.rewrite.ast_util import (
    add_conjuncts,
    column_fields,
    conjuncts,
    copy_node,
    has_aggregates,
    is_plain_select,
    output_columns,
    parse_condition,
    render,
    walk,
)
from planner.rewrite.ordering import OrderKey, bounded, column_of, constant, nth_key_sql, order_of, sort_key
from planner.rewrite.push_down import PushContext, push_down

FIRST_BLOCKS = 1
MAX_BLOCK = 0xFFFFFFFF  # the largest block number a tid can hold: "to the end of the table"


FIRST_ROWS = 64  # ORDER BY: the first batch's rows of the driver


@dataclass
class LimitPlan:
    statement: ast.SelectStmt  # the planning statement, guard included
    limit: int  # rows the statement returns once the blocks done hold enough (its LIMIT)
    table: str  # the driver, as the statement names it (for its size)
    guard: ast.BoolExpr  # its constants are set per batch
    alias: str = ""  # the driver's name in the statement
    order: OrderKey | None = None  # batches by the first ORDER BY key, not by blocks
    filters: tuple[str, ...] = ()  # the driver level's conditions on the driver alone
    # ORDER BY: the same bound on the statement's own sort expression, so that push_down
    # carries it across joins to the other side's models too
    top_guard: ast.BoolExpr | None = None
    top_key: str = ""
    current: ast.SelectStmt | None = None  # the statement of this batch, conditions pushed
    uncorrelated: frozenset[str] = frozenset()  # see planner.rewrite.RewriteContext

    def refresh(self, push: PushContext) -> ast.SelectStmt:
        """This batch's statement: a copy with the guards' values, pushed down again."""
        self.current = push_down(copy_node(self.statement), push)
        return self.current

    def set_bound(self, text: str, type_name: str) -> None:
        """ORDER BY: keep the driver rows ordered up to ``text`` (a value of ``type_name``)."""
        key = f"{quote_ident(self.alias)}.{quote_ident(self.order.column)}"
        value = "'" + text.replace("'", "''") + "'::" + type_name
        self.guard.args = parse_condition(bounded(key, value, self.order)).args
        if self.top_guard is not None:
            self.top_guard.args = parse_condition(bounded(self.top_key, value, self.order)).args

    def set_all(self) -> None:
        """ORDER BY: the last batch, the whole driver."""
        for guard in (self.guard, self.top_guard):
            if guard is not None:
                guard.args = parse_condition("true OR false").args

    def bound_sql(self, rows: int) -> str:
        """The ORDER BY key of the driver's ``rows``-th row in order (with its own filters)."""
        return nth_key_sql(self.table, self.alias, self.order, list(self.filters), rows, typed=True)

    def set_range(self, lo: int, hi: int | None) -> None:
        low, high = self.guard.args
        _set_tid(low, lo)
        _set_tid(high, MAX_BLOCK if hi is None else hi)

    def sql(self) -> str:
        return render(self.current if self.current is not None else self.statement)

    def count_sql(self) -> str:
        return f"SELECT count(*) FROM ({self.sql()}) AS sieve_limit_check"

    def blocks_sql(self) -> str:
        name = self.table.replace("'", "''")
        return f"SELECT pg_catalog.pg_relation_size('{name}'::regclass) / current_setting('block_size')::int"


@dataclass
class LimitRun:
    """How a LIMIT plan ran: for EXPLAIN ANALYZE and the query log."""

    total: int | None  # blocks of the driver when the run started (None: batches by ORDER BY)
    done: int = 0  # blocks, or rows of the driver in ORDER BY order, materialized
    stopped: bool = False  # early: the rest of the table was never read

    def describe(self) -> str:
        how = "stopped early" if self.stopped else "read to the end"
        if self.total is None:
            return f"{how} after the first {self.done} rows of the driving table in ORDER BY order"
        return f"{how} after {self.done} of {self.total} blocks of the driving table"


def plan_limit(statements: list) -> LimitPlan | None:
    """A LIMIT plan for the (rewritten) statement, its guard added; None when it does not apply."""
    if len(statements) != 1:
        return None
    stmt = statements[0]
    if not _limited_select(stmt):
        return None
    limit = constant(stmt.limitCount)
    offset = constant(stmt.limitOffset) if stmt.limitOffset is not None else 0
    if limit is None or offset is None:
        return None  # LIMIT ALL, or a value known only at run time
    found = _driver(stmt, sort_key(stmt))
    if found is None:
        return None
    level, table, key = found
    if stmt.sortClause and key is None:
        return None  # ordered by something other than a driver column
    name = table.alias.aliasname if table.alias is not None else table.relname
    named = ast.RangeVar(relname=table.relname, schemaname=table.schemaname, inh=True, relpersistence="p")
    order = order_of(stmt.sortClause[0], key) if key is not None else None
    if order is None:
        ref = quote_ident(name) + ".ctid"
        guard = parse_condition(f"{ref} >= '(0,0)'::tid AND {ref} < '(1,0)'::tid")
    else:
        guard = parse_condition("false OR false")
    filters = tuple(render(c) for c in conjuncts(level.whereClause) if _reads_only(c, name))
    add_conjuncts(level, [guard])
    plan = LimitPlan(stmt, limit, render(named), guard, name, order, filters)
    top = sort_key(stmt)
    if order is not None and level is not stmt and isinstance(top, ast.ColumnRef):
        plan.top_guard, plan.top_key = parse_condition("false OR false"), render(top)
        add_conjuncts(stmt, [plan.top_guard])
    return plan


def _limited_select(stmt) -> bool:
    if not isinstance(stmt, ast.SelectStmt) or stmt.op.name != "SETOP_NONE" or stmt.limitCount is None:
        return False
    if stmt.groupClause or stmt.distinctClause or stmt.havingClause:
        return False
    if stmt.windowClause or stmt.withClause is not None or stmt.lockingClause:
        return False
    return not has_aggregates(stmt.targetList or ())


def _driver(stmt: ast.SelectStmt, key) -> tuple[ast.SelectStmt, ast.RangeVar, str | None] | None:
    """(level, table, the driver column ``key`` reads or None) of the base table every row of
    ``stmt`` comes from, or None when there is none."""
    level = stmt
    while level.fromClause:
        item = level.fromClause[0]
        sole = len(level.fromClause) == 1 and not isinstance(item, ast.JoinExpr)
        while isinstance(item, ast.JoinExpr):
            if item.jointype in (JoinType.JOIN_INNER, JoinType.JOIN_LEFT):
                item = item.larg
            elif item.jointype == JoinType.JOIN_RIGHT:
                item = item.rarg
            else:
                return None
        if isinstance(item, ast.RangeVar):
            if item.inh is False:
                return None
            name = item.alias.aliasname if item.alias is not None else item.relname
            return level, item, column_of(key, name, sole)
        if isinstance(item, ast.RangeSubselect) and not item.lateral and _plain(item.subquery):
            column = column_of(key, item.alias.aliasname if item.alias else None, sole)
            key = output_columns(item.subquery).get(column) if column is not None else None
            level = item.subquery
            continue
        return None
    return None


def _reads_only(condition: ast.Node, name: str) -> bool:
    """A condition on the driver alone, written with its name (no subquery, no parameter)."""
    refs = [n for n in walk(condition) if isinstance(n, ast.ColumnRef)]
    if not refs or any(isinstance(n, ast.SubLink | ast.ParamRef | ast.FuncCall) for n in walk(condition)):
        return False
    return all(len(column_fields(r)) == 2 and column_fields(r)[0] == name for r in refs)


def _plain(query) -> bool:
    return is_plain_select(query) and not query.lockingClause


def _set_tid(comparison: ast.A_Expr, block: int) -> None:
    cast = comparison.rexpr  # '(b,0)'::tid
    cast.arg.val.sval = f"({block},0)"
