"""Cascade with both a recall and a precision target (NoScope-style, with SUPG thresholds).

Rows with proxy >= τ+ are accepted without the oracle, rows with proxy < τ- are rejected, and
the oracle labels every row of the band in between; the answer is the accepted rows plus every
verified positive (minus verified negatives).

δ split (union bound): δ/2 for the recall claim, δ/2 for the precision claim.
* Recall: missed positives are only unlabelled rows below τ-; τ- comes from the same
  fixed-sequence test as the recall-target operator, at δ/2.
* Precision: false positives are only unlabelled accepted rows; τ+ is the largest prefix for
  which "negatives in it <= (1 - p)(head positives + its size)" is certified, testing a geometric
  grid of prefixes with the fallback procedure at δ/2 (importance-weighted bounded means).
Both use one importance sample (``sample_fraction`` of the budget, take-all head + sqrt(proxy)
mixed with uniform); the rest of the budget labels the band. Band labels are exact, so they
cost no δ. When the band does not fit in the budget, the operator labels the band's best rows,
returns ``target_met=False`` and says how many labels the band needs.

Bounds: both thresholds come from importance-weighted bounded means, so the choice of bound
matters as in the recall-target operator: the finite-sample ones pay for the worst-case weight
1/mix (and at small budgets certify only a reject threshold at the bottom of the table, a band
too large to label); ``"empirical"`` and ``"normal"`` use the range and spread the sample shows
and give an approximate guarantee (``finite_sample=False``). ``mix=None`` takes the bound's
default (:data:`sampling.recall.DEFAULT_MIX`).
"""

from __future__ import annotations

import numpy as np

from .bounds import FINITE_SAMPLE_METHODS, mean_at_most
from .importance import RankedProxy, SuffixDesign, as_ranked, take_all_head
from .oracle import BudgetedOracle, Oracle, as_budgeted
from .precision import fallback_level
from .recall import default_mix, recall_threshold
from .results import SelectionResult
from .selection_common import assemble, label_positions_in_order, labels_of, positions_at_least
from .validation import check_budget, check_confidence, check_fraction, check_unit_interval


def accept_prefix(
    rp: RankedProxy,
    design: SuffixDesign,
    pos: np.ndarray,
    y: np.ndarray,
    pos_head: int,
    p: float,
    delta: float,
    method: str,
    n_candidates: int,
) -> int:
    """Largest tail prefix (count of tail rows) certified to keep precision >= p, or 0.

    Candidate prefix sizes are a geometric grid fixed from the proxy alone; each is a bounded
    mean test on x = (1 - y) · 1[in prefix] · w with range [0, largest weight in the prefix].
    """
    n_t = design.size
    if pos.size == 0 or n_t == 0:
        return 0
    raw = np.unique(np.geomspace(1, n_t, n_candidates).astype(np.int64))
    grid = np.unique(rp.count_at_least(rp.desc[design.start + raw - 1]) - design.start)
    grid = grid[(grid >= 1) & (grid <= n_t)]
    alphas = np.full(grid.size, delta / max(grid.size, 1))
    w = design.weight(pos)
    neg = 1.0 - y
    outcome: list[bool] = []
    best = 0
    for size in grid:
        level = fallback_level(outcome, alphas)
        x = neg * (pos < design.start + size) * w
        hi = float(design.weight(design.start + size - 1))
        thr = (1.0 - p) * (pos_head + size) / n_t
        ok = bool(mean_at_most(x, 0.0, hi, thr, level, method)[0])
        outcome.append(ok)
        if ok:
            best = max(best, int(size))
    return best


def select_cascade(
    proxy: np.ndarray | RankedProxy,
    oracle: Oracle | BudgetedOracle,
    *,
    recall_target: float,
    precision_target: float,
    budget: int,
    rng: np.random.Generator,
    confidence: float = 0.95,
    bound: str = "betting",
    sample_fraction: float = 0.5,
    mix: float | None = None,
    n_candidates: int = 16,
) -> SelectionResult:
    """Cascade meeting recall >= ``recall_target`` and precision >= ``precision_target``, jointly
    with probability >= ``confidence`` when ``target_met`` is True (approximately, for the bounds
    without a finite-sample guarantee). ``mix=None``: the bound's default uniform share."""
    gamma = check_fraction("recall target", recall_target)
    p = check_fraction("precision target", precision_target)
    conf = check_confidence(confidence)
    budget = check_budget(budget)
    sample_fraction = check_unit_interval("sample_fraction", sample_fraction)
    mix = check_unit_interval("mix", default_mix(bound, mix))
    rp = as_ranked(proxy)
    delta = 1.0 - conf
    d_recall, d_precision = delta / 2.0, delta / 2.0
    bo = as_budgeted(oracle, budget)

    n_s = max(1, int(round(sample_fraction * bo.remaining)))
    head = take_all_head(rp, n_s, mix)
    y_head = labels_of(bo, rp.order[:head])
    pos_head = int(y_head.sum())
    design = SuffixDesign(rp, head, mix)
    pos = design.draw(rng, n_s - head) if design.size else np.empty(0, dtype=np.int64)
    y = labels_of(bo, rp.order[pos])
    w = design.weight(pos) if pos.size else np.empty(0)

    if design.size:
        tau_lo, passed = recall_threshold(
            rp.desc[pos], y, w, design.max_weight, design.size, pos_head, gamma, d_recall, bound
        )
        if passed:
            tau_lo = float(rp.desc[head])
        reject_from = positions_at_least(rp, tau_lo)
        accept_to = head + accept_prefix(rp, design, pos, y, pos_head, p, d_precision, bound, n_candidates)
    else:
        tau_lo, reject_from, accept_to = None, rp.n, head
    band_lo, band_hi = accept_to, max(accept_to, reject_from)
    band_size = band_hi - band_lo
    lab_rank = rp.rank[bo.labelled_indices()]
    unlabelled = int(band_size - np.count_nonzero((lab_rank >= band_lo) & (lab_rank < band_hi)))
    band_budget = bo.remaining
    covered = unlabelled <= band_budget
    label_positions_in_order(bo, rp, band_lo, band_hi, min(unlabelled, band_budget))
    if bo.remaining and accept_to > head:
        # spare labels: check the weakest accepted rows, removing false positives
        label_positions_in_order(bo, rp, max(head, accept_to - 4 * bo.remaining), accept_to, bo.remaining)
    indices = assemble(bo, rp, head, accept_to)

    tau_hi = float(rp.desc[accept_to - 1]) if accept_to > head else np.inf
    hint = None
    if not covered:
        need = bo.calls + unlabelled - band_budget
        hint = (
            f"the band between the certified thresholds holds {band_size} rows, {unlabelled} of "
            f"them unlabelled, more than the {band_budget} labels left after sampling; the recall "
            f"target is not guaranteed. A budget of about {need} would cover this band."
        )
    return SelectionResult(
        kind="cascade",
        indices=indices,
        oracle_calls=bo.calls,
        budget=bo.budget,
        targets={"recall": gamma, "precision": p},
        confidence=conf,
        thresholds={
            "reject_below": -np.inf if tau_lo is None else float(tau_lo),
            "accept_at_or_above": tau_hi,
        },
        delta_split={"recall (reject threshold)": d_recall, "precision (accept threshold)": d_precision},
        bound=bound,
        finite_sample=bound in FINITE_SAMPLE_METHODS,
        target_met=covered,
        achieved_bound={
            "precision_lower_bound": p if accept_to > head else 1.0,
            "recall_lower_bound": (1.0 if reject_from >= rp.n else gamma) if covered else float("nan"),
        },
        budget_hint=hint,
        details={
            "head": head,
            "draws": int(pos.size),
            "band_rows": int(band_size),
            "band_unlabelled": unlabelled,
            "band_covered": covered,
            "accepted_unlabelled_rows": int(max(accept_to - head, 0)),
            "mix": mix,
        },
    )
