"""What one statement does with labels (planner/labels): the text a request records, the labels
it read first and so counts as its model calls (handed back when it ends in SV001: the statement
that succeeds counts them), and, while an approximate query collects, the inputs it found
unlabelled. The planner starts the state per statement (``begin_statement``); the tasks of the
statement inherit it (a context variable)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

from planner.labels import store
from planner.model_spec import ModelSpec


@dataclass
class StatementLabels:
    """``marked``: (model id, digests) counted as read; ``pending``: model id -> (spec, digests)."""

    sql: str = ""
    collect: bool = False
    marked: list[tuple[int, list[bytes]]] = field(default_factory=list)
    pending: dict[int, tuple[ModelSpec, dict[bytes, None]]] = field(default_factory=dict)


_statement: contextvars.ContextVar[StatementLabels | None] = contextvars.ContextVar(
    "sieve_labels_statement", default=None
)


def begin_statement(sql: str) -> None:
    """The planner starts a statement (its tasks inherit the state)."""
    _statement.set(StatementLabels(sql))


def current_sql() -> str:
    return current().sql


def labels_pending() -> bool:
    """Whether the statement running is an approximate query that found inputs unlabelled: its
    answer is provisional (it ends in SV001, or runs again once they are labelled), so it should
    not be logged or reported as an answer."""
    found = _statement.get()
    return found is not None and found.collect and bool(found.pending)


def current() -> StatementLabels:
    found = _statement.get()
    if found is None:
        found = StatementLabels()
        _statement.set(found)
    return found


async def count_read(dbs, spec: ModelSpec, digests: list[bytes], result, statement: StatementLabels) -> None:
    """Labels this statement reads: those answered since a statement last read them count as
    its model calls (as inputs a model ran on), the others as cache hits."""
    used = await store.mark_used(dbs.write, int(spec.id), digests)
    if used:
        statement.marked.append((int(spec.id), used))
    result.add(spec.name, len(used), len(digests) - len(used))


async def hand_back(dbs, statement: StatementLabels) -> None:
    """The statement ends in SV001: the labels it counted are counted by the one that succeeds."""
    for model_id, digests in statement.marked:
        await store.unmark_used(dbs.write, model_id, digests)
    statement.marked = []
