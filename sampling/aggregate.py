"""COUNT / SUM / AVG of one aggregate over rows, with a relative error target.

A row-level table is the cluster design of ``cluster`` with one row per unit, so this module
only adapts the row oracle (matches[, values[, groups]]) to unit answers and calls
:func:`cluster.estimate_unit_aggregates` with ``max_rows=1``: the design (proxy strata, betting
allocation, uniform floor), the intervals and the δ split are described there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .cluster import AGGREGATES, AggSpec, UnitAnswer, estimate_unit_aggregates
from .oracle import BudgetedOracle, BudgetExceededError, Oracle
from .results import AggregateResult
from .validation import check_budget

__all__ = ["AGGREGATES", "estimate_aggregate"]


def estimate_aggregate(
    n_rows: int,
    oracle: Oracle | BudgetedOracle,
    *,
    agg: str,
    error_target: float,
    budget: int,
    rng: np.random.Generator,
    confidence: float = 0.95,
    proxy: np.ndarray | None = None,
    strata: int | None = None,
    value_bounds: tuple[float, float] | None = None,
    group_keys: Sequence[Any] | None = None,
    bound: str = "betting",
    pilot_size: int | None = None,
    uniform_share: float | None = None,
) -> AggregateResult:
    """Estimate COUNT(*), SUM(value) or AVG(value) over matching rows, per group if the oracle
    returns groups, so that P(|estimate - truth| <= error_target·|truth|) >= confidence for every
    group in the δ split, using at most ``budget`` distinct oracle calls.

    ``oracle(idx)`` returns ``matches`` (bool array) or ``(matches, values)`` or
    ``(matches, values, groups)``. ``value_bounds`` = (lo, hi) for the values of matching rows
    is what makes SUM/AVG intervals finite-sample valid; without it the observed range is used
    and the result reports ``finite_sample=False``. ``proxy`` (scores in [0, 1]) enables the
    stratified design. ``bound``: ``"betting"`` (finite-sample, anytime-valid), ``"empirical"``
    (the same betting interval) or ``"normal"`` (CLT intervals, asymptotic baseline). The
    result's ``bound`` is the one requested; ``details["interval"]`` names the interval
    computed. ``strata``, ``pilot_size`` and ``uniform_share`` shape the stratified design (see
    ``sampling.cluster``). A BudgetedOracle keeps its own count: this call asks it about at most
    its remaining budget of rows, and reports the calls made here.
    """
    agg = str(agg).lower()
    if agg not in AGGREGATES:
        raise ValueError(f"agg must be one of {', '.join(AGGREGATES)}, got {agg!r}")
    budget = check_budget(budget)
    if isinstance(oracle, BudgetedOracle):
        # rows it labelled before are charged again here: conservative, never over its budget
        budget = min(budget, oracle.remaining)
        if budget <= 0:
            raise BudgetExceededError(f"oracle budget {oracle.budget} already spent")
    (result,) = estimate_unit_aggregates(
        n_rows,
        _RowsAsUnits(oracle, agg),
        aggs=[AggSpec(agg, value_bounds)],
        error_target=error_target,
        budget=budget,
        rng=rng,
        confidence=confidence,
        proxy=proxy,
        max_rows=1,
        group_keys=group_keys,
        bound=bound,
        strata=strata,
        pilot_size=pilot_size,
        uniform_share=uniform_share,
    )
    return result


class _RowsAsUnits:
    """A row oracle seen as a unit oracle: one line (count 1, sum = value) per matching row."""

    def __init__(self, oracle: Oracle | BudgetedOracle, agg: str) -> None:
        self.oracle, self.agg = oracle, agg

    def __call__(self, idx: np.ndarray) -> UnitAnswer:
        m, v, g = _normalise_answer(self.oracle(idx), len(idx), self.agg)
        lines = np.flatnonzero(m)
        sums = v[lines] if self.agg != "count" else np.zeros(lines.size)
        ones = np.ones((lines.size, 1))
        return UnitAnswer(lines, None if g is None else g[lines], ones, sums.reshape(-1, 1))


def _normalise_answer(ans: Any, n: int, agg: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if isinstance(ans, tuple):
        parts = list(ans) + [None] * (3 - len(ans))
        matches, values, groups = parts[:3]
    else:
        matches, values, groups = ans, None, None
    m = np.asarray(matches)
    if m.shape != (n,):
        raise ValueError(f"oracle returned {m.shape} answers (matches) for {n} rows")
    m = m.astype(bool)
    if values is None:
        if agg != "count":
            raise ValueError(f"{agg.upper()} needs the oracle to return (matches, values[, groups])")
        v = np.ones(n)
    else:
        v = np.asarray(values, dtype=np.float64)
        if v.shape != (n,):
            raise ValueError(f"oracle returned {v.shape} answers (values) for {n} rows")
        if agg != "count" and not np.all(np.isfinite(v[m])):
            raise ValueError("oracle returned non-finite values for matching rows")
    g = None if groups is None else np.asarray(groups)
    if g is not None and g.shape != (n,):
        raise ValueError(f"oracle returned {g.shape} answers (groups) for {n} rows")
    return m, v, g
