"""The exact planner's rewrite passes: each a pure function, SQL tree in, SQL tree out.

The tree they produce is a *planning* statement: it names every model call the statement can
reach in terms of base tables, so that call sites (planner.calls) and their input queries can
be read off it. Postgres still runs the client's own statement (or, for an early-stopping LIMIT,
this tree with a row guard added), so every pass keeps the statement's meaning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pglast import ast

from planner.rewrite.inline_views import inline_views
from planner.rewrite.prune_columns import prune_columns
from planner.rewrite.push_down import PushContext, push_down
from planner.rewrite.semi_joins import semi_joins
from planner.rewrite.subquery_limits import subquery_limits


@dataclass(frozen=True)
class RewriteContext:
    models: set[str]
    views: dict[str, str] = field(default_factory=dict)
    table_models: set[str] = field(default_factory=set)  # models that return rows, not a value
    uncorrelated: frozenset[str] = frozenset()  # subqueries (SQL text) that read nothing around them

    @property
    def push(self) -> PushContext:
        return PushContext(self.models, self.uncorrelated)


Pass = Callable[[ast.Node, RewriteContext], ast.Node]

EXACT_PASSES: tuple[tuple[str, Pass], ...] = (
    ("inline_views", lambda stmt, ctx: inline_views(stmt, ctx.views)),
    ("prune_columns", lambda stmt, ctx: prune_columns(stmt, ctx.models, ctx.table_models)),
    ("semi_joins", lambda stmt, ctx: semi_joins(stmt, ctx.models)),
    ("subquery_limits", lambda stmt, ctx: subquery_limits(stmt, ctx.models, ctx.table_models)),
    ("push_down", lambda stmt, ctx: push_down(stmt, ctx.push)),
)


def rewrite(stmt: ast.Node, ctx: RewriteContext, passes=EXACT_PASSES) -> ast.Node:
    for _, apply in passes:
        stmt = apply(stmt, ctx)
    return stmt
