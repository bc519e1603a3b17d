"""The approximate plan: what ``analyse`` reads off a statement and its clause (plain data).

A *unit* is what the operators sample and the budget counts: one row of the statement's base
tables (a combination of rows when it joins several), keyed by their ``ctid``s. A scalar model
gives a unit at most one result row; a table-returning model (a detector, ``LATERAL detect(..)``)
gives it any number, so an aggregate over its rows samples units as clusters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pglast import ast

from planner.approx.clause import ApproxClause

DEFAULT_BUDGET = 1000


@dataclass(frozen=True)
class Aggregate:
    """One aggregate of an ERROR TARGET query's select list."""

    name: str  # the result column's name
    kind: str  # "count" | "sum" | "avg"
    value: str | None  # SQL of its argument (None for COUNT(*))
    reads_model: bool  # the argument reads a model output (its range is unknown in advance)


@dataclass(frozen=True)
class Output:
    """A result column: an aggregate (``aggregate`` is its position in ``ApproxPlan.aggregates``)
    or a GROUP BY expression (``group`` is its position in ``ApproxPlan.groups``)."""

    name: str
    aggregate: int | None = None
    group: int | None = None


@dataclass
class ApproxPlan:
    kind: str  # "selection" | "limit" | "aggregate" | "exact" (no model: answered by Postgres)
    sql: str  # the client's statement as sent
    stmt: ast.SelectStmt  # views merged, parameters bound, clause removed
    clause: ApproxClause
    unit_names: list[str]  # SQL names (alias or table) of the base tables whose rows are units
    unit_from: str  # FROM of the base tables only
    from_sql: str  # the whole FROM (base tables and LATERAL model functions)
    free: list[str]  # WHERE conjuncts over the base tables only: which units are candidates
    modelled: list[str]  # the other WHERE conjuncts (they need model outputs)
    models: list[str]  # every model the statement runs, in call order
    site: object = None  # the oracle's CallSite (selection and limit)
    aggregates: list[Aggregate] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # GROUP BY expressions (SQL)
    groups_read_models: bool = False
    max_rows: int | None = 1  # result rows per unit, when known in advance
    limit: int | None = None  # k of a proxy-ordered LIMIT (OFFSET included)

    @property
    def budget(self) -> int:
        return self.clause.budget if self.clause.budget is not None else DEFAULT_BUDGET

    @property
    def predicate(self) -> str:
        return " AND ".join(f"({c})" for c in self.modelled)

    @property
    def model(self) -> str:
        return self.models[0] if self.models else ""

    @property
    def single(self) -> bool:
        return len(self.unit_names) == 1

    @property
    def key_sql(self) -> str:
        """The unit key as text (what the operators hold)."""
        if self.single:
            return f"{self.unit_names[0]}.ctid::text"
        return "concat_ws(',', " + ", ".join(f"{r}.ctid::text" for r in self.unit_names) + ")"

    def guard(self, keys: list[str]) -> str:
        """A condition true for the units of ``keys`` only (a TID scan for one table)."""
        body = "{" + ",".join(f'"{k}"' for k in keys) + "}"  # ctids hold no quotes or backslashes
        if self.single:
            return f"{self.unit_names[0]}.ctid = ANY('{body}'::tid[])"
        return f"{self.key_sql} = ANY('{body}'::text[])"

    def where(self, *extra: str) -> str:
        parts = [f"({c})" for c in self.free] + [e for e in extra if e]
        return " AND ".join(parts) if parts else "true"
