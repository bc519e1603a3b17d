"""Recall-target selection (SUPG IS-RT with finite-sample bounds).

Design: the top rows that importance sampling would hit anyway form a take-all head and are
labelled outright; the remaining budget draws rows i.i.d. from q ∝ sqrt(proxy) mixed with uniform.

Guarantee: with P_H the (exactly known) head positives and, for the tail, Q(t) the positives with
proxy < t and P_T all positives, recall of the answer is at least 1 - Q(t)/(P_H + P_T). For each
candidate t the null "Q(t) - (1-γ) P_T > (1-γ) P_H" is a claim about the mean of
    Y = y · w · (1[proxy < t] - (1 - γ)),   w = 1 / (N_T q) <= max_weight,
a bounded variable with known range [-(1-γ) max_weight, γ max_weight]. Candidates are tested in
ascending order of t and testing stops at the first one not rejected (fixed-sequence testing):
the bad thresholds form an upper set (Q is monotone), so a wrong answer requires rejecting the
first bad threshold, which happens with probability <= δ. All of δ goes to this single chain;
no split is needed.
"""

from __future__ import annotations

import numpy as np

from .bounds import FINITE_SAMPLE_METHODS, check_method, mean_at_most
from .importance import RankedProxy, SuffixDesign, as_ranked, take_all_head
from .oracle import BudgetedOracle, Oracle, as_budgeted
from .results import SelectionResult
from .selection_common import assemble, label_positions_in_order, labels_of, positions_at_least
from .validation import check_budget, check_confidence, check_fraction, check_unit_interval

# Test matrices are (segments x draws); chunk the segments to bound memory.
_CELLS = 2_000_000


def recall_threshold(
    a: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    max_weight: float,
    n_tail: int,
    pos_head: int,
    gamma: float,
    delta: float,
    method: str,
) -> tuple[float | None, bool]:
    """Fixed-sequence test over ascending thresholds.

    ``a``, ``y``, ``w``: proxy, label and importance weight of each draw from the tail. Returns
    ``(tau, all_passed)``: the largest certified threshold among sampled positive proxies (None:
    no threshold certified, keep every tail row); ``all_passed`` means even the top segment was
    certified, so any tail threshold up to the largest tail proxy is fine.
    """
    n = a.size
    if n == 0:
        return None, False
    yw = (y * w).astype(np.float64)
    pos = y.astype(bool)
    levels = np.unique(a[pos])
    # rank of each positive draw among the levels; negatives never change segment (rank = inf)
    rank = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    rank[pos] = np.searchsorted(levels, a[pos])
    base = -(1.0 - gamma) * yw
    lo, hi = -(1.0 - gamma) * max_weight, gamma * max_weight
    c = (1.0 - gamma) * pos_head / n_tail
    n_seg = levels.size + 1
    chunk = max(1, _CELLS // n)
    for k0 in range(0, n_seg, chunk):
        ks = np.arange(k0, min(n_seg, k0 + chunk))
        # segment k: positive draws with proxy <= levels[k-1] count as missed
        below = ks[:, None] > rank[None, :]
        yk = base[None, :] + yw[None, :] * below
        ok = mean_at_most(yk, lo, hi, c, delta, method)
        if not ok.all():
            first = int(ks[int(np.argmin(ok))])
            return (None if first == 0 else float(levels[first - 1])), False
    return (float(levels[-1]) if levels.size else None), True


def select_recall_target(
    proxy: np.ndarray | RankedProxy,
    oracle: Oracle | BudgetedOracle,
    *,
    target: float,
    budget: int,
    rng: np.random.Generator,
    confidence: float = 0.95,
    bound: str = "betting",
    mix: float = 0.5,
) -> SelectionResult:
    """Rows whose recall is >= ``target`` with probability >= ``confidence`` (SUPG IS-RT).

    Returns every row with proxy >= the certified threshold plus the oracle-verified positives,
    minus oracle-verified negatives. The oracle sees at most ``budget`` distinct rows. ``mix`` is
    the uniform share of the sampling distribution; finite-sample bounds scale with the largest
    importance weight 1/mix, so they prefer a larger share (0.5) than SUPG's CLT setting (0.1).
    """
    gamma = check_fraction("recall target", target)
    conf = check_confidence(confidence)
    budget = check_budget(budget)
    check_method(bound)
    mix = check_unit_interval("mix", mix)
    rp = as_ranked(proxy)
    delta = 1.0 - conf
    bo = as_budgeted(oracle, budget)
    avail = bo.remaining

    head = take_all_head(rp, avail, mix)
    y_head = labels_of(bo, rp.order[:head])
    design = SuffixDesign(rp, head, mix)
    n_draw = bo.remaining
    pos = design.draw(rng, n_draw) if design.size else np.empty(0, dtype=np.int64)
    y = labels_of(bo, rp.order[pos])
    a = rp.desc[pos]
    w = design.weight(pos) if pos.size else np.empty(0)
    pos_head = int(y_head.sum())

    if design.size == 0:
        tau, all_passed = None, True
        tail_keep = 0
    else:
        tau, all_passed = recall_threshold(
            a, y, w, design.max_weight, design.size, pos_head, gamma, delta, bound
        )
        if all_passed:
            # every tail threshold up to the largest tail proxy is certified
            tau = float(rp.desc[head])
        tail_keep = positions_at_least(rp, tau) - head
    stop = head + max(tail_keep, 0)
    # Budget left by repeated draws: label the lowest-proxy accepted rows (most likely negatives).
    spare = bo.remaining
    if spare and stop > head:
        lo_pos = max(head, stop - 4 * spare)
        label_positions_in_order(bo, rp, lo_pos, stop, spare)
    indices = assemble(bo, rp, head, stop)

    est = _estimates(a, y, w, design, pos_head, head, stop, rp, indices)
    degenerate = stop >= rp.n and head < rp.n
    hint = None
    if degenerate:
        need = _budget_needed(a, y, w, design, pos_head, gamma, delta, n_draw)
        hint = (
            f"recall target {gamma:.0%} at confidence {conf:.0%} could only be certified by returning "
            f"every row: {n_draw} draws cannot rule out positives hidden among low-proxy rows"
            + (
                f"; a budget of roughly {need} would allow a proxy threshold"
                if need and need < rp.n
                else "; only a budget close to a full scan would help"
            )
        )
    return SelectionResult(
        kind="recall",
        indices=indices,
        oracle_calls=bo.calls,
        budget=bo.budget,
        targets={"recall": gamma},
        confidence=conf,
        thresholds={"tau": -np.inf if tau is None else float(tau)},
        delta_split={"recall (fixed-sequence test over thresholds)": delta},
        bound=bound,
        finite_sample=bound in FINITE_SAMPLE_METHODS,
        target_met=True,
        # returning every row (minus verified negatives) has recall exactly 1
        achieved_bound={"recall_lower_bound": 1.0 if stop >= rp.n else gamma},
        estimates=est,
        budget_hint=hint,
        details={"head": head, "draws": int(pos.size), "tail_accepted": int(max(tail_keep, 0))},
    )


def _estimates(
    a: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    design: SuffixDesign,
    pos_head: int,
    head: int,
    stop: int,
    rp: RankedProxy,
    indices: np.ndarray,
) -> dict[str, float]:
    """Point estimates (not guarantees) of total positives, recall and precision."""
    n_t = design.size
    if a.size == 0 or n_t == 0:
        return {"positives": float(pos_head)}
    tail_pos = float(np.mean(y * w) * n_t)
    tau = rp.desc[stop - 1] if stop > head else np.inf
    above = float(np.mean(y * w * (a >= tau)) * n_t)
    total = pos_head + tail_pos
    recall = (pos_head + above) / total if total > 0 else 1.0
    precision = (pos_head + above) / max(indices.size, 1)
    return {"positives": total, "recall": min(recall, 1.0), "precision": min(precision, 1.0)}


def _budget_needed(
    a: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    design: SuffixDesign,
    pos_head: int,
    gamma: float,
    delta: float,
    n: int,
) -> int | None:
    """Rough number of draws the betting test would need at the threshold that, by this
    sample's estimate, misses half of the positives the target allows.

    A constant bet λ gains about λ·margin - λ²·E[(Y - c)²]/2 log-wealth per draw, and λ may not
    exceed the safety cap 0.75 / (γ·max_weight - c); the test passes after log(1/δ) / gain draws.
    """
    if a.size < 2:
        return None
    n_t = design.size
    yw = y * w
    total = pos_head + float(np.mean(yw)) * n_t
    order = np.argsort(a)
    missed = np.cumsum(yw[order]) / a.size * n_t
    k = int(np.searchsorted(missed, 0.5 * (1.0 - gamma) * total, side="right"))
    tau = a[order][min(k, a.size - 1)]
    c = (1.0 - gamma) * pos_head / n_t
    yv = yw * ((a < tau) - (1.0 - gamma))
    margin = c - float(yv.mean())
    if margin <= 0:
        return None
    second = float(np.mean((yv - c) ** 2))
    cap = 0.75 / max(gamma * design.max_weight - c, 1e-300)
    lam = min(margin / max(second, 1e-300), cap)
    gain = lam * margin - lam * lam * second / 2.0
    if gain <= 0:
        return None
    return int(np.ceil(np.log(1.0 / delta) / gain)) + (n - a.size)
