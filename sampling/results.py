"""Result records returned by the sampling operators (plain data, no behaviour)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SelectionResult:
    """Rows chosen by a recall-target, precision-target or cascade selection.

    ``indices`` are row positions into the proxy array, sorted ascending. ``thresholds`` maps
    names (``"tau"``, or ``"reject_below"``/``"accept_at_or_above"`` for a cascade) to proxy
    thresholds; rows with proxy >= threshold were returned without an oracle call.
    ``delta_split`` maps each statistical claim to the failure probability spent on it (they
    sum to at most 1 - confidence). ``achieved_bound`` holds the levels the answer is certified
    to meet at that confidence (e.g. ``{"recall_lower_bound": 0.9}``; 1.0 where the answer is
    exact, e.g. every returned row was verified). ``estimates`` holds point estimates (not
    guarantees) of the achieved recall/precision. ``target_met`` is True when every requested
    guarantee holds at the stated confidence; ``budget_hint`` explains, in words, when the
    budget was too small to give a useful or a guaranteed answer. ``bound`` is the bound method
    requested; ``finite_sample`` is True when the guarantee holds at every sample size whatever
    the data: False with ``"empirical"`` or ``"normal"``, except where the design lets the
    operator use an exact test instead (the precision target's stage 2, or a census).
    """

    kind: str
    indices: np.ndarray
    oracle_calls: int
    budget: int
    targets: dict[str, float]
    confidence: float
    thresholds: dict[str, float]
    delta_split: dict[str, float]
    bound: str
    finite_sample: bool
    target_met: bool
    achieved_bound: dict[str, float] = field(default_factory=dict)
    estimates: dict[str, float] = field(default_factory=dict)
    budget_hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.indices.size)


@dataclass(frozen=True)
class LimitResult:
    """Outcome of a proxy-ordered LIMIT search: the first ``k`` oracle-verified positives."""

    indices: np.ndarray
    oracle_calls: int
    k: int
    found: int
    exhausted: bool
    budget_hint: str | None = None


@dataclass(frozen=True)
class GroupEstimate:
    """Estimate and confidence interval of one aggregate (one group of a GROUP BY)."""

    group: Any
    estimate: float
    ci_low: float
    ci_high: float
    target_met: bool
    delta: float
    matches_seen: int


@dataclass(frozen=True)
class AggregateResult:
    """COUNT / SUM / AVG estimate with a confidence interval.

    Without GROUP BY, ``groups`` has the single key ``None`` and the top-level ``estimate``,
    ``ci_low``, ``ci_high`` repeat it. With GROUP BY the top-level fields are NaN and each group
    carries its own interval (each at ``delta_split["per_group"]``). ``target_met`` is True when
    every group's interval lies within the relative error target. ``budget_needed`` is a rough
    extrapolation of the number of oracle calls that would meet the target (None when met).
    ``bound`` is the method requested and ``details["interval"]`` the interval computed
    (``"empirical"`` gets the betting interval); ``finite_sample`` refers to the latter.
    """

    agg: str
    estimate: float
    ci_low: float
    ci_high: float
    groups: dict[Any, GroupEstimate]
    oracle_calls: int
    draws: int
    rounds: int
    budget: int
    error_target: float
    confidence: float
    delta_split: dict[str, float]
    design: str
    bound: str
    finite_sample: bool
    target_met: bool
    budget_needed: int | None = None
    budget_hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AutoProxy:
    """Scores of a proxy trained on a uniform labelled sample, and what training cost."""

    scores: np.ndarray
    train_indices: np.ndarray
    train_labels: np.ndarray
    oracle_calls: int
    coef: np.ndarray
    intercept: float
    train_fraction: float
