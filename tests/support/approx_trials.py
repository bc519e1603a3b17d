"""Seeded trials of ERROR TARGET aggregates against a truth computed by plain SQL.

An aggregate answer is read as cells: one per (group key, aggregate position), each with the
estimate and, under ``SET sieve.bounds = on``, its interval. The truth is the same statement over
tables that hold the model outputs already, read as cells the same way, so that coverage and
accuracy are cell-by-cell comparisons of two result sets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from scipy.stats import binom

GroupKey = tuple
Cell = tuple[GroupKey, int]  # (group key, position of the aggregate among the aggregates)

LOG_COLUMNS = (
    "query_id",
    "mode",
    "target",
    "confidence",
    "estimate",
    "ci_low",
    "ci_high",
    "certified",
    "certified_level",
    "rows_labelled",
    "model_calls",
    "groups",
)
NOT_MET = "TARGET NOT MET"
CERTIFIED = ("certified (finite-sample", "exact (certified)")


def binomial_floor(trials: int, level: float = 0.95, quantile: float = 0.001) -> int:
    """The least number of successes a procedure that succeeds with probability ``level`` falls
    below with probability at most ``quantile`` (one-sided: a conservative bound only helps)."""
    return int(binom.ppf(quantile, trials, level))


@dataclass(frozen=True)
class Interval:
    estimate: float | None
    low: float | None
    high: float | None

    def contains(self, value: float | None) -> bool:
        if value is None:  # AVG/SUM of no rows is NULL: so must the estimate be
            return self.estimate is None
        if self.low is None or self.high is None:
            return False
        slack = 1e-9 * max(1.0, abs(value))  # float4 values summed in two orders
        return self.low - slack <= value <= self.high + slack


@dataclass(frozen=True)
class Answer:
    """One approximate run: its cells, its ``sieve.query_log`` row and its NOTICEs."""

    seed: int | None
    cells: dict[Cell, Interval]
    log: dict
    notices: list[str] = field(default_factory=list)

    @property
    def target_met(self) -> bool:
        """No aggregate's NOTICE says its target was missed (the log has no such column for an
        answer without GROUP BY)."""
        return not any(NOT_MET in n for n in self.notices)

    @property
    def groups_met(self) -> bool | None:
        """With GROUP BY: every (aggregate, group) the log records met its target."""
        groups = self.log.get("groups")
        return None if groups is None else all(g["target_met"] for g in groups)

    @property
    def says_certified(self) -> bool:
        """Every aggregate's NOTICE calls its answer certified."""
        return bool(self.notices) and all(any(c in n for c in CERTIFIED) for n in self.notices)


def _float(value) -> float | None:
    return None if value is None else float(value)


def read_truth(conn: psycopg.Connection, sql: str, n_groups: int) -> dict[Cell, float]:
    """Cells of an exact result whose first ``n_groups`` columns are the GROUP BY keys."""
    cells: dict[Cell, float] = {}
    for row in conn.execute(sql).fetchall():
        key = tuple(row[:n_groups])
        for pos, value in enumerate(row[n_groups:]):
            cells[(key, pos)] = _float(value)
    return cells


def read_answer(conn: psycopg.Connection, sql: str, n_groups: int, seed: int | None = None) -> Answer:
    """Run one approximate statement (``sieve.bounds`` on: value, low, high per aggregate) and
    read back the ``sieve.query_log`` row it wrote."""
    notices: list[str] = []
    handler = lambda diag: notices.append(diag.message_primary or "")  # noqa: E731
    conn.add_notice_handler(handler)
    try:
        before = last_log_id(conn)
        rows = conn.execute(sql).fetchall()
    finally:
        conn.remove_notice_handler(handler)
    cells: dict[Cell, Interval] = {}
    for row in rows:
        key = tuple(row[:n_groups])
        values = row[n_groups:]
        for pos in range(len(values) // 3):
            est, low, high = values[3 * pos : 3 * pos + 3]
            cells[(key, pos)] = Interval(_float(est), _float(low), _float(high))
    log = log_row(conn)
    assert log["query_id"] > before, f"no sieve.query_log row for {sql!r}"
    return Answer(seed, cells, log, notices)


def run_trials(conn: psycopg.Connection, sql: str, n_groups: int, seeds: Iterable[int]) -> list[Answer]:
    answers = []
    for seed in seeds:
        conn.execute(f"SET sieve.seed = {int(seed)}")
        answers.append(read_answer(conn, sql, n_groups, seed))
    return answers


def last_log_id(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT coalesce(max(query_id), 0) FROM sieve.query_log").fetchone()[0]


def log_row(conn: psycopg.Connection) -> dict:
    """The newest ``sieve.query_log`` row as a dict."""
    row = conn.execute(
        f"SELECT {', '.join(LOG_COLUMNS)} FROM sieve.query_log ORDER BY query_id DESC LIMIT 1"
    ).fetchone()
    return dict(zip(LOG_COLUMNS, row, strict=True))


def covers(answer: Answer, truth: dict[Cell, float]) -> bool:
    """Every cell of the truth (every aggregate of every group at once) lies in its interval;
    a group the answer lacks is a miss."""
    return all(cell in answer.cells and answer.cells[cell].contains(value) for cell, value in truth.items())


def within(answer: Answer, truth: dict[Cell, float], error_target: float) -> bool:
    """Every cell's estimate is within ``error_target`` of the truth, relatively."""
    for cell, value in truth.items():
        got = answer.cells.get(cell)
        if got is None or value is None or got.estimate is None:
            if got is not None and value is None and got.estimate is None:
                continue  # NULL is the exact answer over no rows
            return False
        if abs(got.estimate - value) > error_target * abs(value) + 0.5 * _rounding(value):
            return False
    return True


def _rounding(value: float) -> float:
    """An integral truth (COUNT, SUM of ints) is answered rounded to an integer: allow that half unit."""
    return 1.0 if float(value).is_integer() else 0.0


def exact_equals(answer: Answer, truth: dict[Cell, float]) -> bool:
    """The answer is the truth, cell for cell, with a collapsed interval (float rounding only)."""
    if set(answer.cells) != set(truth):
        return False
    for cell, value in truth.items():
        got = answer.cells[cell]
        for part in (got.estimate, got.low, got.high):
            if part is None or not math.isclose(part, value, rel_tol=1e-9, abs_tol=1e-12):
                return False
    return True
