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
    sum to at most 1 - confidence).

    Three levels of claim, always all reported, whatever bound was requested:

    * ``certified``: finite-sample lower bounds (keys ``"recall"`` and ``"precision"``) on the
      recall and precision of the rows actually returned, computed from the labels this run
      drew and valid at ``confidence`` on any data and any proxy (blind spots included). An
      exact answer (census, verified rows only, every row returned) counts as certified. When
      nothing can be certified the recall entry is 0.0 (never NaN); the precision entry is at
      least the share of returned rows the oracle verified as positive (a bound that always
      holds). ``certified_target_met`` is True when every requested target is certified this
      way; for a cascade, its two targets hold jointly at ``confidence`` (δ is split between
      them, see ``delta_split``).
    * ``achieved_bound``: what the *requested* bound claims (e.g. ``{"recall_lower_bound": 0.9}``;
      1.0 where the answer is exact). With ``"empirical"`` or ``"normal"`` this is an
      approximate claim; ``finite_sample`` is True when the requested bound (or the exact test
      the operator used in its place) is finite-sample.
    * ``estimates``: point estimates of the achieved recall/precision, not guarantees.

    ``target_met`` is True when every requested target holds at the stated confidence under the
    requested bound, or is certified (``certified_target_met`` implies ``target_met``).
    ``details["claims"]`` names, per claim, the bound the operator actually used for it (e.g.
    ``{"precision": "exact hypergeometric"}``) and ``details["certification"]`` how the
    ``certified`` levels were computed. ``budget_hint`` explains, in words, when the budget was
    too small to give a useful or a guaranteed answer. ``bound`` is the bound method requested.
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
    certified: dict[str, float] = field(default_factory=dict)
    certified_target_met: bool = False
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


@dataclass(frozen=True)
class ProxyCheck:
    """How well a proxy ranks the rows already labelled (see :mod:`sampling.proxy_check`).

    ``auc`` is the (weighted) probability that a positive outscores a negative, ties counting
    half; [``ci_low``, ``ci_high``] its bootstrap interval at ``confidence``. ``verdict`` is
    ``"informative"`` (interval above 0.5), ``"reversed"`` (below 0.5) or ``"uninformative"``
    (contains 0.5, or too few labels of one class to measure: ``reason`` says which).
    """

    verdict: str
    auc: float
    ci_low: float
    ci_high: float
    positives: int
    negatives: int
    confidence: float
    reason: str


@dataclass(frozen=True)
class FlipAdvice:
    """Whether to use 1 - score instead of the proxy, and whether that keeps the guarantee."""

    flip: bool
    keeps_guarantee: bool
    reason: str
