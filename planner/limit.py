"""LIMIT without a full scan: materialize in growing batches, stop once the answer is whole.

Applies to a single SELECT with a constant LIMIT (and OFFSET), no ORDER BY, grouping or
aggregates, and one model call site. Each batch is checked on its own (only rows whose input is
new this batch are counted), and the statement Postgres finally runs carries a guard that keeps
rows whose model input is not materialized out of it: any LIMIT rows are a correct answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.stream import RawStream

from planner.calls import CallSite
from planner.install import digest_sql, digests_literal
from planner.model_spec import ModelSpec
from planner.views import has_aggregates


@dataclass
class LimitPlan:
    statement: ast.SelectStmt
    site: CallSite
    spec: ModelSpec
    rows: int  # LIMIT + OFFSET: rows the query must be able to produce

    def _digest(self) -> str:
        return digest_sql(self.spec, list(self.site.args))

    def cached_guard(self) -> str:
        return (
            f"EXISTS (SELECT 1 FROM {self.spec.cache_table} sieve_c WHERE sieve_c.digest = {self._digest()})"
        )

    def batch_guard(self, keys: list) -> str:
        """Rows among ``keys``: row keys (ctid text) when the site has them, else digests."""
        if self.site.row_key is not None:
            listed = ",".join(f'"{k}"' for k in keys)
            return f"{self.site.row_key} = ANY('{{{listed}}}'::tid[])"
        return f"{self._digest()} = ANY({digests_literal(keys)})"

    def guarded_sql(self, guard: str) -> str:
        """The statement with ``guard`` added to the WHERE of the call site's level."""
        level = self.site.level
        original = level.whereClause
        extra = parse_sql(f"SELECT 1 WHERE {guard}")[0].stmt.whereClause
        level.whereClause = extra if original is None else ast.BoolExpr(boolop=0, args=(original, extra))
        try:
            return RawStream()(self.statement)
        finally:
            level.whereClause = original

    def count_sql(self, guard: str) -> str:
        return f"SELECT count(*) FROM ({self.guarded_sql(guard)}) AS sieve_limit_check"


def plan_limit(statements: list, sites: list[CallSite], specs: dict[str, ModelSpec]) -> LimitPlan | None:
    if len(statements) != 1 or len(sites) != 1:
        return None
    stmt, site = statements[0], sites[0]
    if not isinstance(stmt, ast.SelectStmt) or not isinstance(site.level, ast.SelectStmt):
        return None
    if stmt.op.name != "SETOP_NONE" or stmt.sortClause or stmt.groupClause or stmt.distinctClause:
        return None
    if stmt.havingClause or stmt.windowClause or has_aggregates(stmt.targetList or ()):
        return None
    limit = _constant(stmt.limitCount)
    offset = _constant(stmt.limitOffset) if stmt.limitOffset is not None else 0
    if limit is None or offset is None:
        return None
    return LimitPlan(statement=stmt, site=site, spec=specs[site.model], rows=limit + offset)


def _constant(node) -> int | None:
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer):
        return node.val.ival
    return None
