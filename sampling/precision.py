"""Precision-target selection (SUPG IS-PT redesigned: no pilot label is wasted, finite-sample).

Stage 1 labels the top rows in proxy order (``pilot_fraction`` of the budget). These labels are
exact and are kept by every design below, so none of the budget is spent on a pilot that the
answer does not use. If the positives are already thinning out at the end of that run (the
precision of its last half is below the target), the rows a threshold could certify fit in the
budget: the rest of the budget continues the census (labelling the best-ranked rows outright),
and the answer is the verified positives, precision exactly 1 with no statistical error.

Otherwise (a dense top, e.g. tens of thousands of rows at high precision) a region may be far
larger than the budget: an importance sample of the rows below the labelled top (q ∝
sqrt(proxy) mixed with uniform) estimates the precision of each prefix, which fixes a candidate
region (the top ``region`` rows) and the order of the stage-2 tests; when labelling outright
still looks better, the census goes on instead.

Stage 2: the region's rows already labelled form an exact stratum; a simple random sample
without replacement is drawn from its other rows. The answer for a prefix of ``s`` rows is
S = (prefix minus verified negatives) plus verified positives outside it, so precision >= p
holds when the unlabelled negatives of the prefix number at most (1 - p)|S|. That count is
exactly hypergeometric in the sample, so the test is exact at any sample size, whatever the
data. Labels drawn later (in stage 2 or with spare budget) only remove negatives or add
positives, which never lowers precision.

Multiple thresholds: the fallback procedure (Wiens 2003) over an order fixed before stage 2. A
main chain starts at a prefix predicted to be comfortably certifiable and walks up to larger
prefixes with (1 - η)δ, stopping at the first failure; a backup chain of smaller prefixes shares
ηδ in case the prediction was too optimistic. Family-wise error <= δ, so every certified prefix is
correct with probability >= 1 - δ and the answer uses the largest one. The main chain is a fixed
sequence, so it steps finely (0.5% apart) at no cost in level, and the region is chosen on a 1%
grid: on a dense, well-separated top (10% positives, proxy Beta(20, 1.5) vs Beta(1, 30)) coarse
steps stopped the answer up to 7% of the positives short of the edge (recall 0.978 against
BARGAIN's 0.9995; 1.000 with these steps, bench/bench_bargain.py --datasets sep).

Bounds: every bound except ``"normal"`` uses the exact hypergeometric test (tighter than any
bound on a bounded mean, and finite-sample), so ``"empirical"`` runs the same valid procedure
and reports ``finite_sample=True``; ``"normal"`` uses SUPG's Wald interval (asymptotic), and its
answer is certified after the fact by running the exact tests on the same sample and order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .bounds import check_method
from .importance import RankedProxy, SuffixDesign, as_ranked
from .oracle import BudgetedOracle, Oracle, as_budgeted
from .results import SelectionResult
from .selection_common import (
    assemble,
    first_missable_position,
    label_positions_in_order,
    labelled_sets,
    labels_of,
    verified_precision,
)
from .validation import check_budget, check_confidence, check_fraction, check_unit_interval

_BACKUP_SHARE = 0.2  # η: part of δ kept for the backup chain
_PILOT_MIX = 0.1  # uniform share of the sampled pilot's design (it only estimates, no bound uses it)
_EXACT = "exact hypergeometric"
# Share of the pilot labels that go to the top run (the rest samples below it, when needed).
_TOP_SHARE = 0.4
# Relative step between the main chain's prefixes (a fixed sequence: fine steps cost no level).
_CHAIN_STEP = 0.005
_REGION_POINTS = 1400  # geometric grid for the region: about 1% steps up to 10^6 rows


def exact_stage_two(bound: str) -> bool:
    """Does stage 2 use the exact hypergeometric test with this bound? (All but ``"normal"``.)"""
    return check_method(bound) != "normal"


def fallback_level(rejected_so_far: list[bool], alphas: np.ndarray) -> float:
    """Level of the next hypothesis in the fallback procedure, given earlier outcomes."""
    j = len(rejected_so_far)
    level = float(alphas[j])
    k = j - 1
    while k >= 0 and rejected_so_far[k]:
        level += float(alphas[k])
        k -= 1
    return level


class TopCurve:
    """Precision estimates over prefixes: the top ``n_top`` positions exactly (labelled in
    order), the rows below them from importance-sampled draws of a suffix design."""

    def __init__(self, y_top: np.ndarray, design: SuffixDesign, pos: np.ndarray, y: np.ndarray) -> None:
        self.n_top = int(y_top.size)
        self.n_rows = design.rp.n
        self.top_cum = np.concatenate([[0], np.cumsum(y_top)])
        order = np.argsort(pos, kind="stable")
        self.pos = pos[order]
        w = design.weight(self.pos) if pos.size else np.empty(0)
        self.cw = np.concatenate([[0.0], np.cumsum(w)])
        self.cyw = np.concatenate([[0.0], np.cumsum(y[order] * w)])

    def _suffix(self, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.searchsorted(self.pos, np.maximum(size, self.n_top), side="left")
        return self.cyw[k], self.cw[k]

    def positives(self, size: np.ndarray | int) -> np.ndarray:
        """Estimated positives among the top ``size`` rows: the exact count in the labelled top,
        plus the rows below it times their ratio (Hajek) estimate of the positive rate (far
        steadier than Horvitz-Thompson with few draws)."""
        size = np.asarray(size)
        below = np.maximum(size - self.n_top, 0)
        rate = np.nan_to_num(self.suffix_precision(size), nan=0.0)
        return self.top_cum[np.minimum(size, self.n_top)] + below * rate

    def precision(self, size: np.ndarray) -> np.ndarray:
        """Estimated precision of the top ``size`` rows."""
        size = np.asarray(size)
        return self.positives(size) / np.maximum(size, 1)

    def suffix_precision(self, size: np.ndarray) -> np.ndarray:
        """Ratio (Hajek) estimate of the positive rate among the rows of the prefix below the top."""
        pos_w, w = self._suffix(np.asarray(size))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(w > 0, pos_w / np.where(w > 0, w, 1.0), np.nan)


def precision_region(curve: TopCurve, target: float, slack: float) -> int:
    """Largest prefix (on a geometric grid) whose estimated precision is >= target - slack.

    A region too small caps recall, one too large dilutes the stage-2 sample; on synthetic
    benchmarks slack 0 gave the best certified recall.
    """
    # 1% steps: the main chain steps finely, so a coarse grid here would cap it well below the
    # edge (on a well-separated top the 96-point grid stopped 1% of the positives short)
    sizes = np.unique(np.geomspace(1, curve.n_rows, _REGION_POINTS).astype(np.int64))
    prec = curve.precision(sizes)
    ok = sizes[np.nan_to_num(prec, nan=0.0) >= target - slack]
    return int(ok.max()) if ok.size else 0


def top_is_thinning(y_top: np.ndarray, target: float) -> bool:
    """Is the top run too sparse for a sampled threshold to beat labelling on in order?

    A certified prefix ends where its precision falls to the target. Unless the last half of
    the labelled top is still clearly denser than the target (its positive rate at least
    halfway from the target to 1), that prefix ends near the rows already labelled, and the
    census finds at least as many positives as any threshold could return (on Beta(0.01, 2)
    at PT 90% the rate is about 0.93 there while the 90% prefix holds only 34 rows).
    """
    tail = y_top[y_top.size // 2 :]
    return tail.size == 0 or float(tail.mean()) < (1.0 + target) / 2.0


@dataclass
class _Plan:
    census: bool
    curve: TopCurve | None
    region: int


def _plan(
    rp: RankedProxy, bo: BudgetedOracle, p: float, pilot_fraction: float, mix: float, rng: np.random.Generator
) -> _Plan:
    """Stage 1 (label the top rows) and, for a dense top, the sampled pilot below it."""
    pilot = max(2, int(round(pilot_fraction * bo.remaining)))
    # the top run is kept by every design; the sampled pilot only estimates (it needs the rest)
    n_top = min(rp.n, max(1, int(round(_TOP_SHARE * pilot))))
    label_positions_in_order(bo, rp, 0, rp.n, n_top)
    y_top = labels_of(bo, rp.order[:n_top])
    if n_top >= rp.n or top_is_thinning(y_top, p) or bo.remaining == 0:
        return _Plan(True, None, 0)
    design = SuffixDesign(rp, n_top, mix)
    n_pilot = max(1, pilot - n_top)
    pos = design.draw(rng, n_pilot)
    # draws repeat: keep those the budget allows (labelled rows are free)
    fresh = np.cumsum(~bo.is_labelled(rp.order[pos]))
    pos = pos[: int(np.searchsorted(fresh, bo.remaining, side="right"))]
    y = labels_of(bo, rp.order[pos])
    curve = TopCurve(y_top, design, pos, y)
    region = precision_region(curve, p, slack=0.0)
    remaining = bo.remaining
    labelled_in_region = int(np.count_nonzero(rp.rank[bo.labelled_indices()] < region))
    reach = min(rp.n, remaining + n_top)
    census_gain = float(curve.positives(reach))
    # a certified threshold rarely reaches the whole region; 0.8 discounts for that
    sample_gain = 0.8 * p * region
    census = region == 0 or region - labelled_in_region <= remaining or census_gain >= sample_gain
    return _Plan(census, curve, region)


def select_precision_target(
    proxy: np.ndarray | RankedProxy,
    oracle: Oracle | BudgetedOracle,
    *,
    target: float,
    budget: int,
    rng: np.random.Generator,
    confidence: float = 0.95,
    bound: str = "betting",
    pilot_fraction: float = 0.25,
    mix: float | None = None,
    n_candidates: int = 16,
) -> SelectionResult:
    """Rows whose precision is >= ``target`` with probability >= ``confidence``.

    Every ``bound`` but ``"normal"`` (betting, bernstein, hoeffding and also ``"empirical"``)
    uses the exact hypergeometric test in stage 2, so the result is finite-sample valid;
    ``"normal"`` uses a Wald interval (asymptotic). ``pilot_fraction`` is the share of the
    budget that labels the top rows first (and, for a dense top, the share of the rest that
    samples below them); ``mix`` (None: 0.1) is the uniform share of that sample's design.
    """
    p = check_fraction("precision target", target)
    conf = check_confidence(confidence)
    budget = check_budget(budget)
    check_method(bound)
    pilot_fraction = check_unit_interval("pilot_fraction", pilot_fraction, allow_one=False)
    mix = check_unit_interval("mix", _PILOT_MIX if mix is None else mix)
    rp = as_ranked(proxy)
    delta = 1.0 - conf
    bo = as_budgeted(oracle, budget)

    plan = _plan(rp, bo, p, pilot_fraction, mix, rng)
    details: dict[str, object] = {"region": plan.region}
    stop, hint, unverified_pos = 0, None, 0.0
    exact_ok = True
    if plan.census:
        label_positions_in_order(bo, rp, 0, rp.n, bo.remaining)
        details["design"] = "census of the top rows"
    else:
        stop, info = _stage_two(rp, bo, plan.curve, plan.region, p, delta, bound, n_candidates, rng)
        unverified_pos = float(info.pop("unverified_positives"))
        exact_ok = bool(info.pop("exact_certifies_answer"))
        details.update(info)
        details["design"] = "sampled region"
        if stop == 0:
            hint = (
                f"no proxy threshold could be certified at precision {p:.0%} with {budget} labels; "
                "only oracle-verified positives are returned"
            )
        if bo.remaining:
            label_positions_in_order(bo, rp, stop, rp.n, bo.remaining)
    indices = assemble(bo, rp, 0, stop)
    tau = float(rp.desc[stop - 1]) if stop else np.inf
    est = _estimates(bo, plan.curve, indices, unverified_pos, rp.n)
    sampled = not plan.census
    test_name = _EXACT if exact_stage_two(bound) else "Wald (CLT, approximate)"
    claim = (
        f"{test_name}, fallback procedure over thresholds"
        if sampled and stop
        else "exact (verified rows only)"
    )
    cert_precision = 1.0 if stop == 0 else (p if exact_ok else verified_precision(bo, indices))
    missable = first_missable_position(bo, rp, indices, 0)
    cert_recall = 1.0 if missable is None else 0.0
    details["claims"] = {"precision": claim}
    details["certification"] = {
        "precision": claim
        if exact_ok or stop == 0
        else f"{_EXACT} tests rerun on the same sample: not certified",
        "recall": "exact"
        if missable is None
        else "not certified (no design-based bound on missed positives)",
    }
    return SelectionResult(
        kind="precision",
        indices=indices,
        oracle_calls=bo.calls,
        budget=bo.budget,
        targets={"precision": p},
        confidence=conf,
        thresholds={"tau": tau},
        delta_split={
            "precision: main chain of thresholds": (1 - _BACKUP_SHARE) * delta if sampled else 0.0,
            "precision: backup chain": _BACKUP_SHARE * delta if sampled else 0.0,
            "unused (census answer is exact)": 0.0 if sampled else delta,
        },
        bound=bound,
        finite_sample=exact_stage_two(bound) or stop == 0,
        target_met=True,
        # only verified rows returned: precision is exactly 1
        achieved_bound={"precision_lower_bound": 1.0 if stop == 0 else p},
        estimates=est,
        certified={"precision": cert_precision, "recall": cert_recall},
        certified_target_met=cert_precision >= p,
        budget_hint=hint,
        details=details,
    )


def _estimates(
    bo: BudgetedOracle, curve: TopCurve | None, indices: np.ndarray, unverified_pos: float, n_rows: int
) -> dict[str, float]:
    """Point estimates (not guarantees); recall only when rows below the top were sampled."""
    pos_lab, _ = labelled_sets(bo)
    found = pos_lab.size + unverified_pos
    est = {"precision": float(min(1.0, found / indices.size)) if indices.size else 1.0}
    if curve is not None:
        total = max(float(curve.positives(n_rows)), float(pos_lab.size))
        est["positives"] = total
        est["recall"] = float(min(1.0, found / total)) if total > 0 else 1.0
    return est


def precision_test(
    negatives: int,
    n: int,
    population: int,
    allowed: float,
    level: float,
    bound: str,
    at_most: int | None = None,
) -> bool:
    """Reject "Neg > allowed" from ``negatives`` seen in a without-replacement sample of ``n``
    out of ``population`` rows (Neg counts the marked rows in the population; ``at_most`` is a
    known cap on Neg, e.g. the sampled population's rows inside the prefix)."""
    return bool(precision_tests(negatives, n, population, allowed, level, bound, at_most))


def precision_tests(
    negatives: np.ndarray | int,
    n: int,
    population: int,
    allowed: np.ndarray | float,
    level: float,
    bound: str,
    at_most: np.ndarray | int | None = None,
) -> np.ndarray:
    """``precision_test`` over arrays of (negatives, allowed, at_most) at once (the fine
    candidate grid has hundreds of prefixes; one scipy call per prefix dominated the run)."""
    negatives, allowed = np.broadcast_arrays(np.asarray(negatives), np.asarray(allowed, dtype=float))
    d0 = np.floor(allowed).astype(np.int64) + 1  # smallest count that violates the target
    trivial = d0 > population
    if at_most is not None:
        trivial |= d0 > np.asarray(at_most)
    if n == 0:
        rejected = trivial
    elif not exact_stage_two(bound):
        f = negatives / n
        se = np.sqrt(np.maximum(f * (1 - f), 0.0) / n * (population - n) / max(population - 1, 1))
        rejected = trivial | (population * (f + stats.norm.ppf(1 - level) * se) < d0)
    else:
        marked = np.clip(d0, 0, population)  # outside [0, population] the answer is already known
        rejected = trivial | (stats.hypergeom.cdf(negatives, population, marked, n) <= level)
    return rejected & (allowed >= 0)


@dataclass(frozen=True)
class _Strata:
    """What is known before stage 2: labelled positives/negatives (positions) and the region's
    unlabelled rows (the population stage 2 samples)."""

    known_pos: np.ndarray
    known_neg: np.ndarray
    unlabelled: np.ndarray

    def allowed(self, size: int, p: float) -> float:
        """(1 - p)·|S| for the answer S built on the top ``size`` rows."""
        neg_in = int(np.searchsorted(self.known_neg, size))
        pos_out = self.known_pos.size - int(np.searchsorted(self.known_pos, size))
        return (1.0 - p) * (size - neg_in + pos_out)

    def population_in(self, size: int) -> int:
        return int(np.searchsorted(self.unlabelled, size))


def _strata(rp: RankedProxy, bo: BudgetedOracle, region: int) -> _Strata:
    pos, neg = labelled_sets(bo)
    known = np.zeros(region, dtype=bool)
    lab = rp.rank[bo.labelled_indices()]
    known[lab[lab < region]] = True
    return _Strata(np.sort(rp.rank[pos]), np.sort(rp.rank[neg]), np.flatnonzero(~known))


def _stage_two(
    rp: RankedProxy,
    bo: BudgetedOracle,
    curve: TopCurve,
    region: int,
    p: float,
    delta: float,
    bound: str,
    n_candidates: int,
    rng: np.random.Generator,
) -> tuple[int, dict[str, object]]:
    """Stage-2 sample and tests; returns (certified prefix size, info).

    Everything labelled so far is an exact stratum fixed before the stage-2 sample, so it may
    enter every hypothesis; the sample is a simple random sample of the region's other rows.
    """
    st = _strata(rp, bo, region)
    pop = int(st.unlabelled.size)
    n2 = min(bo.remaining, pop)
    main, backup = _test_order(rp, curve, st, region, n2, p, delta, bound, n_candidates)
    order = np.concatenate([main, backup]).astype(np.int64)
    alphas = np.zeros(order.size)
    if main.size:
        alphas[0] = (1 - _BACKUP_SHARE) * delta
    if backup.size:
        alphas[main.size :] = (_BACKUP_SHARE if main.size else 1.0) * delta / backup.size

    sample = np.sort(rng.choice(st.unlabelled, size=n2, replace=False)) if n2 else np.empty(0, np.int64)
    y2 = labels_of(bo, rp.order[sample])
    # the requested test chooses the answer; the exact one (the same when bound != "normal")
    # says whether that answer is certified
    methods = {"requested": bound} if exact_stage_two(bound) else {"requested": bound, "exact": "betting"}
    runs: dict[str, list[bool]] = {key: [] for key in methods}
    for size in order:
        negatives = int(np.count_nonzero((sample < size) & (y2 == 0)))
        for key, outcome in runs.items():
            level = fallback_level(outcome, alphas)
            rejected = level > 0 and precision_test(
                negatives, n2, pop, st.allowed(int(size), p), level, methods[key], st.population_in(int(size))
            )
            outcome.append(bool(rejected))
    chosen = runs["requested"]
    best = max([int(s) for s, ok in zip(order, chosen, strict=True) if ok], default=0)
    exact_rejected = {int(s) for s, ok in zip(order, runs.get("exact", chosen), strict=True) if ok}
    in_prefix = sample < best
    frac_pos = float(y2[in_prefix].mean()) if np.any(in_prefix) else 0.0
    return best, {
        "stage2_draws": int(n2),
        "stage2_test": _EXACT if exact_stage_two(bound) else "Wald (CLT)",
        "tests": [(int(s), bool(o)) for s, o in zip(order, chosen, strict=True)],
        "unverified_positives": frac_pos * st.population_in(best),
        "exact_certifies_answer": best == 0 or best in exact_rejected,
    }


def _test_order(
    rp: RankedProxy,
    curve: TopCurve,
    st: _Strata,
    region: int,
    n2: int,
    p: float,
    delta: float,
    bound: str,
    n_candidates: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate prefix sizes: (main chain, ascending from a predicted-safe start; backup chain).

    Uses only what is known before stage 2, so the order is fixed before its sample.
    """
    low = max(curve.n_top, 1)
    # fine enough for the main chain's step (see fine_chain), coarse enough to stay cheap
    n_raw = max(8 * n_candidates, int(np.ceil(np.log(max(region, low) / low) / np.log1p(_CHAIN_STEP))) + 1)
    raw = np.unique(np.geomspace(low, region, n_raw).astype(np.int64))
    # snap to tie-complete prefixes so "proxy >= tau" is exactly the prefix
    raw = np.unique(rp.count_at_least(rp.desc[raw - 1]))
    raw = raw[raw <= region]
    # a prefix with no unlabelled row returns only verified rows, as stop = 0 already does
    raw = raw[np.array([st.population_in(int(s)) > 0 for s in raw], dtype=bool)]
    pop = int(st.unlabelled.size)
    if raw.size == 0:
        return raw, raw

    def test(k: int, s: int, level: float) -> bool:
        return precision_test(k, n2, pop, st.allowed(s, p), level, bound, st.population_in(s))

    allowed = np.array([st.allowed(int(s), p) for s in raw])
    in_pop = np.array([st.population_in(int(s)) for s in raw])
    raw = raw[precision_tests(0, n2, pop, allowed, delta, bound, in_pop)]
    if raw.size == 0:
        return raw, raw
    picks = np.searchsorted(raw, np.geomspace(raw[0], raw[-1], n_candidates), side="left")
    grid = np.unique(raw[picks.clip(0, raw.size - 1)])
    # predicted sampled negatives: expected count plus one standard deviation
    neg_rate = 1.0 - np.nan_to_num(curve.suffix_precision(grid), nan=1.0)
    share = np.array([st.population_in(int(s)) for s in grid]) / max(pop, 1)
    expect = n2 * share * neg_rate
    predicted = np.ceil(expect + np.sqrt(np.maximum(expect, 1.0))).astype(np.int64)
    level = (1 - _BACKUP_SHARE) * delta
    ok = np.array([test(int(k), int(s), level) for k, s in zip(predicted, grid, strict=True)])
    if not ok.any():
        return grid[:0], grid
    best = int(np.flatnonzero(ok).max())
    # prefixes mostly labelled already pass trivially: they say nothing about where to start
    informative = ok & (share * max(pop, 1) >= 0.5 * grid)
    first = int(np.flatnonzero(informative).min()) if informative.any() else best
    # start halfway (in log size) between the first and the best predicted prefix
    start = max(first, int(np.searchsorted(grid, np.sqrt(grid[first] * grid[best]), side="left")))
    start = min(start, best)
    return fine_chain(raw, int(grid[start])), grid[:start]


def fine_chain(raw: np.ndarray, start: int) -> np.ndarray:
    """Main chain: every candidate prefix from ``start`` up, ``_CHAIN_STEP`` apart at least.

    The main chain is a fixed sequence (each test at the full (1 - η)δ, stop at the first
    failure), so stepping finely costs no level: it only lets the chain stop close to where
    precision really falls to the target instead of at the last coarse step below it.
    """
    chain = raw[raw >= start]
    keep, last = [], -np.inf
    for size in chain.tolist():
        if size >= last * (1.0 + _CHAIN_STEP):
            keep.append(size)
            last = size
    if chain.size and keep[-1] != chain[-1]:
        keep.append(int(chain[-1]))  # the region itself is always the last hypothesis
    return np.asarray(keep, dtype=np.int64)
