"""Cascade with both a recall and a precision target (NoScope-style, with SUPG thresholds).

Rows with proxy >= τ+ are accepted without the oracle, rows with proxy < τ- are rejected, and
the oracle labels every row of the band in between; the answer is the accepted rows plus every
verified positive (minus verified negatives).

δ split (union bound): δ/2 for the recall claim, δ/2 for the precision claim.
* Recall: missed positives are only unlabelled rows below τ-; τ- comes from the same
  fixed-sequence test as the recall-target operator.
* Precision: false positives are only unlabelled accepted rows; τ+ is the largest prefix for
  which "negatives in it <= (1 - p)(head positives + its size)" is certified, testing a geometric
  grid of prefixes with the fallback procedure (importance-weighted bounded means).

Budget split: one importance sample (take-all head + sqrt(proxy) mixed with uniform) feeds both
thresholds; the rest of the budget labels the band. How much the sample needs depends on the
data, so the thresholds are computed at a few looks (:data:`LOOKS`: shares of the budget spent
on the sample) and sampling stops at the first look whose band fits in the labels left. Each
look's claims get δ/2 / len(LOOKS) per side (Bonferroni over looks), so every look's claims hold
simultaneously and stopping at a data-dependent look keeps them. Band labels are exact and cost
no δ. When no look's band fits, the operator labels the band's best rows and the recall target
is met only if the answer is certified after the fact (see ``certified``).

Bounds: the reject threshold uses the requested bound, as in the recall-target operator. The
accept threshold uses betting for every bound but ``"normal"``: with ``"empirical"`` a prefix in
which the sample saw no negative has observed range 0 and would be accepted at any size (the
cascade then returned answers far below the precision target on real data). ``certified``
recomputes the recall level with finite-sample chains (``sampling.recall.certify_recall``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bounds import FINITE_SAMPLE_METHODS, mean_at_most
from .importance import RankedProxy, SuffixDesign, as_ranked, take_all_head
from .oracle import BudgetedOracle, Oracle, as_budgeted
from .precision import fallback_level
from .recall import certify_recall, default_mix, recall_threshold
from .results import SelectionResult
from .selection_common import (
    BOUND_NAMES,
    assemble,
    first_missable_position,
    label_positions_in_order,
    labels_of,
    positions_at_least,
    verified_precision,
)
from .validation import check_budget, check_confidence, check_fraction, check_unit_interval

# Shares of the budget the importance sample may have used at each look (see the module doc).
LOOKS = (0.3, 0.5, 0.7)


def precision_method(bound: str) -> str:
    """Bound used by the accept threshold: betting unless the CLT baseline was asked for."""
    return "normal" if bound == "normal" else ("betting" if bound == "empirical" else bound)


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


def _new_label_counts(bo: BudgetedOracle, rows: np.ndarray) -> np.ndarray:
    """For each prefix of ``rows``, how many new labels it would cost now (cumulative)."""
    first = np.zeros(rows.size, dtype=bool)
    first[np.unique(rows, return_index=True)[1]] = True
    return np.cumsum(first & ~bo.is_labelled(rows))


@dataclass(frozen=True)
class _Look:
    """Thresholds computed from the first ``draws`` importance draws."""

    draws: int
    reject_from: int  # first position rejected (rp.n: nothing rejected)
    accept_to: int  # positions [head, accept_to) accepted unlabelled
    tau_lo: float | None
    unlabelled: int  # band rows not labelled yet


def _look(
    rp: RankedProxy,
    bo: BudgetedOracle,
    design: SuffixDesign,
    pos: np.ndarray,
    y: np.ndarray,
    pos_head: int,
    targets: tuple[float, float],
    deltas: tuple[float, float],
    bound: str,
    n_candidates: int,
) -> _Look:
    gamma, p = targets
    head = design.start
    if design.size == 0:
        return _Look(int(pos.size), rp.n, head, None, 0)
    w = design.weight(pos)
    tau_lo, passed = recall_threshold(
        rp.desc[pos], y, w, design.max_weight, design.size, pos_head, gamma, deltas[0], bound
    )
    if passed:
        tau_lo = float(rp.desc[head])
    reject_from = positions_at_least(rp, tau_lo)
    method = precision_method(bound)
    accept_to = head + accept_prefix(rp, design, pos, y, pos_head, p, deltas[1], method, n_candidates)
    band_lo, band_hi = accept_to, max(accept_to, reject_from)
    lab_rank = rp.rank[bo.labelled_indices()]
    labelled = int(np.count_nonzero((lab_rank >= band_lo) & (lab_rank < band_hi)))
    return _Look(int(pos.size), reject_from, accept_to, tau_lo, band_hi - band_lo - labelled)


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
    looks: tuple[float, ...] = LOOKS,
    mix: float | None = None,
    n_candidates: int = 16,
) -> SelectionResult:
    """Cascade meeting recall >= ``recall_target`` and precision >= ``precision_target``, jointly
    with probability >= ``confidence`` when ``target_met`` is True (approximately, for the bounds
    without a finite-sample guarantee; ``certified_target_met`` is the finite-sample verdict).
    ``looks``: ascending shares of the budget the sample may use (see the module doc);
    ``mix=None``: the bound's default uniform share."""
    gamma = check_fraction("recall target", recall_target)
    p = check_fraction("precision target", precision_target)
    conf = check_confidence(confidence)
    budget = check_budget(budget)
    looks = tuple(check_unit_interval("look", f) for f in looks) or LOOKS
    mix = check_unit_interval("mix", default_mix(bound, mix))
    rp = as_ranked(proxy)
    delta = 1.0 - conf
    d_recall, d_precision = delta / 2.0, delta / 2.0
    per_look = (d_recall / len(looks), d_precision / len(looks))
    bo = as_budgeted(oracle, budget)
    n_total = bo.remaining

    n_max = max(1, int(round(looks[-1] * n_total)))
    head = take_all_head(rp, n_max, mix)
    pos_head = int(labels_of(bo, rp.order[:head]).sum())
    design = SuffixDesign(rp, head, mix)
    pool = design.draw(rng, max(n_max - head, 0)) if design.size else np.empty(0, dtype=np.int64)
    cost = _new_label_counts(bo, rp.order[pool])
    base = bo.calls
    look = None
    for share in looks:
        # the draws this look's share of the budget pays for (repeats and labelled rows are free)
        used = int(np.searchsorted(cost, max(int(round(share * n_total)) - base, 0), side="right"))
        labels_of(bo, rp.order[pool[:used]])
        pos = pool[:used]
        y = labels_of(bo, rp.order[pos])
        look = _look(rp, bo, design, pos, y, pos_head, (gamma, p), per_look, bound, n_candidates)
        if look.unlabelled <= bo.remaining:
            break
    assert look is not None
    pos = pool[: look.draws]
    y = labels_of(bo, rp.order[pos])
    band_lo, band_hi = look.accept_to, max(look.accept_to, look.reject_from)
    band_budget = bo.remaining
    covered = look.unlabelled <= band_budget
    label_positions_in_order(bo, rp, band_lo, band_hi, min(look.unlabelled, band_budget))
    if bo.remaining and look.accept_to > head:
        # spare labels: check the weakest accepted rows, removing false positives
        lo = max(head, look.accept_to - 4 * bo.remaining)
        label_positions_in_order(bo, rp, lo, look.accept_to, bo.remaining)
    indices = assemble(bo, rp, head, look.accept_to)
    return _result(
        rp,
        bo,
        design,
        pos,
        y,
        pos_head,
        look,
        indices,
        covered,
        band_budget,
        (gamma, p),
        conf,
        (d_recall, d_precision),
        per_look,
        bound,
        mix,
    )


def _result(
    rp: RankedProxy,
    bo: BudgetedOracle,
    design: SuffixDesign,
    pos: np.ndarray,
    y: np.ndarray,
    pos_head: int,
    look: _Look,
    indices: np.ndarray,
    covered: bool,
    band_budget: int,
    targets: tuple[float, float],
    conf: float,
    deltas: tuple[float, float],
    per_look: tuple[float, float],
    bound: str,
    mix: float,
) -> SelectionResult:
    """Claims, certified levels and wording of a cascade answer."""
    gamma, p = targets
    head = design.start
    accepted = look.accept_to > head
    w = design.weight(pos) if pos.size else np.empty(0)
    missable = first_missable_position(bo, rp, indices, head)
    if design.size:
        cert_recall, how = certify_recall(
            rp.desc[pos], y, w, design, pos_head, missable, gamma, per_look[0], bound
        )
    else:
        cert_recall, how = 1.0, "exact: every row was labelled"
    method = precision_method(bound)
    finite_precision = method in FINITE_SAMPLE_METHODS
    cert_precision = 1.0 if not accepted else p if finite_precision else verified_precision(bo, indices)
    certified_met = cert_recall >= gamma and cert_precision >= p
    band_size = max(look.reject_from - look.accept_to, 0)
    hint = None
    if not covered and not certified_met:
        need = bo.calls + look.unlabelled - band_budget
        hint = (
            f"the band between the certified thresholds holds {band_size} rows, {look.unlabelled} of "
            f"them unlabelled, more than the {band_budget} labels left after sampling; the recall "
            f"target is not guaranteed. A budget of about {need} would cover this band."
        )
    tau_hi = float(rp.desc[look.accept_to - 1]) if accepted else np.inf
    precision_claim = (
        f"{BOUND_NAMES[method]} fallback procedure over accept thresholds"
        if accepted
        else "exact (verified rows)"
    )
    return SelectionResult(
        kind="cascade",
        indices=indices,
        oracle_calls=bo.calls,
        budget=bo.budget,
        targets={"recall": gamma, "precision": p},
        confidence=conf,
        thresholds={
            "reject_below": -np.inf if look.tau_lo is None else float(look.tau_lo),
            "accept_at_or_above": tau_hi,
        },
        delta_split={
            "recall (reject threshold, Bonferroni over looks)": deltas[0],
            "precision (accept threshold, Bonferroni over looks)": deltas[1],
        },
        bound=bound,
        finite_sample=bound in FINITE_SAMPLE_METHODS,
        target_met=covered or certified_met,
        achieved_bound={
            "precision_lower_bound": p if accepted else 1.0,
            "recall_lower_bound": (1.0 if look.reject_from >= rp.n else gamma) if covered else cert_recall,
        },
        estimates=_estimates(rp, design, pos, y, w, pos_head, indices, bo),
        certified={"recall": cert_recall, "precision": cert_precision},
        certified_target_met=certified_met,
        budget_hint=hint,
        details={
            "head": head,
            "draws": int(pos.size),
            "look": look.draws,
            "band_rows": int(band_size),
            "band_unlabelled": look.unlabelled,
            "band_covered": covered,
            "accepted_unlabelled_rows": int(max(look.accept_to - head, 0)),
            "mix": mix,
            "claims": {
                "recall": f"{BOUND_NAMES[bound]} fixed-sequence test over reject thresholds"
                + ("" if covered else " (band not covered: not met unless certified)"),
                "precision": precision_claim,
            },
            "certification": {
                "recall": how,
                "precision": precision_claim if finite_precision or not accepted else "verified rows only",
            },
        },
    )


def _estimates(
    rp: RankedProxy,
    design: SuffixDesign,
    pos: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    pos_head: int,
    indices: np.ndarray,
    bo: BudgetedOracle,
) -> dict[str, float]:
    """Point estimates (not guarantees): positives missed below the answer and unlabelled
    negatives accepted, from the importance sample."""
    n_t = design.size
    if pos.size == 0 or n_t == 0:
        return {"positives": float(pos_head), "recall": 1.0, "precision": verified_precision(bo, indices)}
    returned = np.zeros(rp.n, dtype=bool)
    returned[indices] = True
    labelled = np.zeros(rp.n, dtype=bool)
    labelled[bo.labelled_indices()] = True
    rows = rp.order[pos]
    out = ~returned[rows] & ~labelled[rows]
    inside = returned[rows] & ~labelled[rows]
    total = pos_head + float(np.mean(y * w)) * n_t
    missed = float(np.mean(y * w * out)) * n_t
    false_acc = float(np.mean((1 - y) * w * inside)) * n_t
    recall = 1.0 - missed / total if total > 0 else 1.0
    precision = 1.0 - false_acc / indices.size if indices.size else 1.0
    return {
        "positives": total,
        "recall": float(np.clip(recall, 0, 1)),
        "precision": float(np.clip(precision, 0, 1)),
    }
