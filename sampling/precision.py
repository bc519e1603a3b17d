"""Precision-target selection (SUPG IS-PT, two stages, finite-sample).

Stage 1 (pilot, ``pilot_fraction`` of the budget): importance sample over all rows (q ∝ sqrt(proxy)
mixed with uniform) to estimate the precision of each prefix of the proxy ranking; that fixes a
candidate region (the top K rows) and the order of the stage-2 tests.

Then either
* census: when the pilot suggests that labelling the best-ranked rows outright finds at least as
  many positives as a certified threshold would (small regions, e.g. ImageNet or Beta(0.01, 2)),
  label the top rows in proxy order with the whole remaining budget and return the verified
  positives. Precision is then exactly 1, with no statistical error at all; or
* stage 2: a simple random sample without replacement from the region, and tests on candidate
  prefixes (thresholds). For a prefix of C rows with V pilot-verified positives outside it,
  precision >= target holds when Neg <= (1 - target)(C + V); the number of sampled negatives in
  the prefix is exactly hypergeometric, so the test is exact at any sample size.

Multiple thresholds: the fallback procedure (Wiens 2003) over an order fixed by the pilot. A main
chain starts at a prefix the pilot predicts to be comfortably certifiable and walks up to larger
prefixes with (1 - η)δ, stopping at the first failure; a backup chain of smaller prefixes shares
ηδ in case the pilot was too optimistic. Family-wise error <= δ, so every certified prefix is
correct with probability >= 1 - δ and the answer uses the largest one.

The returned rows are those above the threshold plus all verified positives, minus verified
negatives; dropping false positives or adding true positives never lowers precision.

Bounds: the only statistical test is stage 2's, on 0/1 labels of a without-replacement sample,
where the exact hypergeometric test applies: no range has to be known or estimated, and it is
tighter than any bound on a bounded mean. Every bound except ``"normal"`` therefore uses it, so
``"empirical"`` (and betting, Bernstein, Hoeffding) run the same, finite-sample valid procedure
here and report ``finite_sample=True``; ``"normal"`` uses SUPG's Wald interval (asymptotic).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .bounds import check_method
from .importance import RankedProxy, SuffixDesign, as_ranked
from .oracle import BudgetedOracle, Oracle, as_budgeted
from .results import SelectionResult
from .selection_common import assemble, label_positions_in_order, labelled_sets, labels_of
from .validation import check_budget, check_confidence, check_fraction, check_unit_interval

_BACKUP_SHARE = 0.2  # η: part of δ kept for the backup chain
_PILOT_MIX = 0.1  # uniform share of the pilot design (it only estimates, no bound depends on it)


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


class PrefixCurve:
    """Pilot estimates over prefixes of the proxy ranking, from importance-sampled draws."""

    def __init__(self, n_rows: int, pos: np.ndarray, y: np.ndarray, q: np.ndarray) -> None:
        order = np.argsort(pos, kind="stable")
        self.n_rows = n_rows
        self.pos = pos[order]
        w = 1.0 / (n_rows * q[order])
        self.n_draws = max(pos.size, 1)
        self.cw = np.concatenate([[0.0], np.cumsum(w)])
        self.cyw = np.concatenate([[0.0], np.cumsum(y[order] * w)])

    def precision(self, size: np.ndarray) -> np.ndarray:
        """Ratio (Hajek) estimate of the positive rate among the top ``size`` rows."""
        k = np.searchsorted(self.pos, size, side="left")
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.cyw[k] / self.cw[k]
        return np.where(self.cw[k] > 0, out, np.nan)

    def positives(self, size: int) -> float:
        """Horvitz-Thompson estimate of the positives among the top ``size`` rows."""
        k = int(np.searchsorted(self.pos, size, side="left"))
        return float(self.cyw[k] * self.n_rows / self.n_draws)


def precision_region(curve: PrefixCurve, target: float, slack: float) -> int:
    """Largest prefix (on a geometric grid) whose estimated precision is >= target - slack.

    A region too small caps recall, one too large dilutes the stage-2 sample; on synthetic
    benchmarks slack 0 gave the best certified recall.
    """
    sizes = np.unique(np.geomspace(1, curve.n_rows, 96).astype(np.int64))
    prec = curve.precision(sizes)
    ok = sizes[np.nan_to_num(prec, nan=0.0) >= target - slack]
    return int(ok.max()) if ok.size else 0


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
    """Rows whose precision is >= ``target`` with probability >= ``confidence`` (SUPG IS-PT).

    Every ``bound`` but ``"normal"`` (betting, bernstein, hoeffding and also ``"empirical"``)
    uses the exact hypergeometric test in stage 2 (the design makes it exact), so the result is
    finite-sample valid; ``"normal"`` uses a Wald interval (asymptotic). ``mix`` (None: 0.1,
    for every bound) is the uniform share of the pilot's design, which only estimates.
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

    design = SuffixDesign(rp, 0, mix)
    pos1 = design.draw(rng, max(1, int(round(pilot_fraction * bo.remaining))))
    y1 = labels_of(bo, rp.order[pos1])
    curve = PrefixCurve(rp.n, pos1, y1, design.prob(pos1))
    region = precision_region(curve, p, slack=0.0)
    remaining = bo.remaining
    labelled_in_region = int(np.count_nonzero(rp.rank[bo.labelled_indices()] < region))
    reach = min(rp.n, remaining + bo.calls)
    census_gain = float(np.nan_to_num(curve.precision(np.array([reach]))[0])) * reach
    # a certified threshold rarely reaches the whole region; 0.8 discounts for that
    sample_gain = 0.8 * p * region
    use_census = region == 0 or region - labelled_in_region <= remaining or census_gain >= sample_gain

    details: dict[str, object] = {"pilot_draws": int(pos1.size), "region": region}
    if not use_census:
        details["stage2_test"] = "exact hypergeometric" if exact_stage_two(bound) else "Wald (CLT)"
    tau = np.inf
    stop = 0
    hint = None
    unverified_pos = 0.0
    if use_census:
        label_positions_in_order(bo, rp, 0, rp.n, bo.remaining)
        details["design"] = "census of the top rows"
    else:
        pilot_pos = np.sort(rp.rank[labelled_sets(bo)[0]])
        stop, info = _stage_two(rp, bo, curve, region, p, delta, bound, n_candidates, pilot_pos, rng)
        unverified_pos = float(info.pop("unverified_positives"))
        details.update(info)
        details["design"] = "sampled region"
        tau = float(rp.desc[stop - 1]) if stop else np.inf
        if stop == 0:
            hint = (
                f"no proxy threshold could be certified at precision {p:.0%} with {budget} labels; "
                "only oracle-verified positives are returned"
            )
        spare = bo.remaining
        if spare:
            label_positions_in_order(bo, rp, stop, rp.n, spare)
    indices = assemble(bo, rp, 0, stop)
    pos_lab, _ = labelled_sets(bo)
    total_est = max(curve.positives(rp.n), float(pos_lab.size))
    found = pos_lab.size + unverified_pos
    est = {
        "positives": total_est,
        "recall": float(min(1.0, found / total_est)) if total_est > 0 else 1.0,
        "precision": float(min(1.0, found / indices.size)) if indices.size else 1.0,
    }
    return SelectionResult(
        kind="precision",
        indices=indices,
        oracle_calls=bo.calls,
        budget=bo.budget,
        targets={"precision": p},
        confidence=conf,
        thresholds={"tau": float(tau)},
        delta_split={
            "precision: main chain of thresholds": 0.0 if use_census else (1 - _BACKUP_SHARE) * delta,
            "precision: backup chain": 0.0 if use_census else _BACKUP_SHARE * delta,
            "unused (census answer is exact)": delta if use_census else 0.0,
        },
        bound=bound,
        finite_sample=exact_stage_two(bound) or use_census,
        target_met=True,
        # only verified rows returned: precision is exactly 1
        achieved_bound={"precision_lower_bound": 1.0 if stop == 0 else p},
        estimates=est,
        budget_hint=hint,
        details=details,
    )


def precision_test(negatives: int, n: int, population: int, allowed: float, level: float, bound: str) -> bool:
    """Reject "Neg > allowed" from ``negatives`` seen in a without-replacement sample of ``n``
    out of ``population`` rows (Neg counts the marked rows in the population)."""
    d0 = int(np.floor(allowed)) + 1  # smallest count that violates the target
    if d0 > population:
        return True
    if n == 0:
        return False
    if not exact_stage_two(bound):
        f = negatives / n
        se = np.sqrt(max(f * (1 - f), 0.0) / n * (population - n) / max(population - 1, 1))
        return bool(population * (f + stats.norm.ppf(1 - level) * se) < d0)
    return bool(stats.hypergeom.cdf(negatives, population, d0, n) <= level)


def _stage_two(
    rp: RankedProxy,
    bo: BudgetedOracle,
    curve: PrefixCurve,
    region: int,
    p: float,
    delta: float,
    bound: str,
    n_candidates: int,
    pilot_pos: np.ndarray,
    rng: np.random.Generator,
) -> tuple[int, dict[str, object]]:
    """Stage-2 sample and tests; returns (certified prefix size, info).

    ``pilot_pos``: positions of positives verified in the pilot. They may enter a hypothesis
    (known true positives outside a prefix) because they do not depend on the stage-2 sample.
    """
    n2 = min(bo.remaining, region)
    main, backup = _test_order(rp, curve, region, n2, p, delta, bound, n_candidates, pilot_pos)
    order = np.concatenate([main, backup]).astype(np.int64)
    alphas = np.zeros(order.size)
    if main.size:
        alphas[0] = (1 - _BACKUP_SHARE) * delta
    if backup.size:
        alphas[main.size :] = _BACKUP_SHARE * delta / backup.size
    if not main.size:
        alphas[main.size :] = delta / max(backup.size, 1)

    sample = np.sort(rng.choice(region, size=n2, replace=False))
    y2 = labels_of(bo, rp.order[sample])
    outcome: list[bool] = []
    best = 0
    for size in order:
        level = fallback_level(outcome, alphas)
        negatives = int(np.count_nonzero((sample < size) & (y2 == 0)))
        allowed = (1.0 - p) * (size + int(np.count_nonzero(pilot_pos >= size)))
        rejected = level > 0 and precision_test(negatives, n2, region, allowed, level, bound)
        outcome.append(bool(rejected))
        if rejected:
            best = max(best, int(size))
    in_prefix = sample < best
    frac_pos = float(y2[in_prefix].mean()) if np.any(in_prefix) else 0.0
    unlabelled = best - int(np.count_nonzero(rp.rank[bo.labelled_indices()] < best))
    return best, {
        "stage2_draws": int(n2),
        "tests": [(int(s), bool(o)) for s, o in zip(order, outcome, strict=True)],
        "unverified_positives": frac_pos * unlabelled,
    }


def _test_order(
    rp: RankedProxy,
    curve: PrefixCurve,
    region: int,
    n2: int,
    p: float,
    delta: float,
    bound: str,
    n_candidates: int,
    pilot_pos: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate prefix sizes: (main chain, ascending from a predicted-safe start; backup chain).

    Uses only the pilot, so the order is fixed before stage 2.
    """
    raw = np.unique(np.geomspace(1, region, 8 * n_candidates).astype(np.int64))
    # snap to tie-complete prefixes so "proxy >= tau" is exactly the prefix
    raw = np.unique(rp.count_at_least(rp.desc[raw - 1]))
    raw = raw[raw <= region]
    if raw.size == 0:
        return raw, raw

    def allowed(s: int) -> float:
        return (1 - p) * (s + int(np.count_nonzero(pilot_pos >= s)))

    clean = np.array([precision_test(0, n2, region, allowed(int(s)), delta, bound) for s in raw])
    raw = raw[clean]
    if raw.size == 0:
        return raw, raw
    grid = np.unique(
        raw[
            np.searchsorted(raw, np.geomspace(raw[0], raw[-1], n_candidates), side="left").clip(
                0, raw.size - 1
            )
        ]
    )
    # predicted sampled negatives: expected count plus one standard deviation
    neg_rate = 1.0 - np.nan_to_num(curve.precision(grid), nan=1.0)
    expect = n2 * grid / region * neg_rate
    predicted = np.ceil(expect + np.sqrt(np.maximum(expect, 1.0))).astype(np.int64)
    level = (1 - _BACKUP_SHARE) * delta
    ok = np.array(
        [
            precision_test(int(k), n2, region, allowed(int(s)), level, bound)
            for k, s in zip(predicted, grid, strict=True)
        ]
    )
    if not ok.any():
        return grid[:0], grid
    best = int(np.flatnonzero(ok).max())
    first = int(np.flatnonzero(ok).min())
    # start halfway (in log size) between the first and the best predicted prefix
    start = max(first, int(np.searchsorted(grid, np.sqrt(grid[first] * grid[best]), side="left")))
    start = min(start, best)
    return grid[start:], grid[:start]
