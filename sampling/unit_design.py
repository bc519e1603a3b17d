"""Sampling design of the unit estimator (``sampling.cluster``): strata by proxy rank and the
allocation of each round's draws over them (Neyman's rule for the CLT interval; for the betting
interval the allocation that minimises distinct oracle calls, see ``betting_allocation``)."""

from __future__ import annotations

import numpy as np

# Past d * exp(-d / 2)'s maximum 2 / e (d draws per unit) a stratum costs fewer calls labelled
# in full than sampled: see betting_allocation.
_SATURATE = 2.0 / np.e


# Share of the error budget ε|T| that betting_allocation leaves to the variance.
_VAR_SHARE = 0.25


class Strata:
    """Equal-size strata by proxy rank, and draws from an allocation over them."""

    def __init__(self, n_units: int, proxy: np.ndarray | None, k: int) -> None:
        self.n = n_units
        if proxy is None or k == 1:
            self.order = np.arange(n_units)
            k = 1
        else:
            self.order = np.argsort(proxy, kind="stable")
        k = max(1, min(k, n_units))
        self.bounds = np.linspace(0, n_units, k + 1).astype(np.int64)
        self.sizes = np.diff(self.bounds)
        self.k = k

    def draw(self, rng: np.random.Generator, pi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        strata = rng.choice(self.k, size=n, p=pi)
        offs = (rng.random(n) * self.sizes[strata]).astype(np.int64)
        offs = np.minimum(offs, self.sizes[strata] - 1)
        return self.order[self.bounds[strata] + offs], strata


def allocation_target(
    kind: str,
    c: np.ndarray,
    s: np.ndarray,
    w: np.ndarray,
    est: float,
    rng_j: tuple[float, float, float],
    eps: float,
    n_units: int,
) -> tuple[np.ndarray, float, float]:
    """What the allocations need of one (aggregate, group): its contribution ξ per draw, E* (the
    mean ξ² a stratum may have before the betting allocation samples it above the floor) and the
    CLT allocation's scale (the group's target, so relative errors are balanced across groups)."""
    r, lo, hi = rng_j
    if kind == "count":
        xi, span, total = c, r, abs(est)
    elif kind == "sum":
        xi, span, total = s, r * max(abs(lo), abs(hi)), abs(est)
    else:
        xi = s - est * c
        span = r * max(hi - est, est - lo)
        total = abs(est) * n_units * float(np.mean(c * w))  # |AVG| x COUNT
    e_star = span * eps * total * _VAR_SHARE / n_units
    scale = abs(est) * max(float(np.mean(c)), 1e-12) if kind == "avg" else abs(est) / n_units
    return xi, e_star, scale


def allocation(
    st: Strata,
    prop: np.ndarray,
    s_cat: np.ndarray,
    targets: list[tuple[np.ndarray, float, float]],
    uniform_share: float,
) -> np.ndarray:
    """π_k ∝ N_k sqrt(Σ_i E_k[ξ_i²] / T_i²) over (aggregate, group) targets i, mixed with
    proportional allocation."""
    if st.k == 1:
        return prop
    score = np.zeros(st.k)
    cnt = np.bincount(s_cat, minlength=st.k)
    for xi, _, scale in targets:
        scale = scale if scale > 0 else 1.0
        sq = np.bincount(s_cat, weights=xi**2, minlength=st.k)
        pooled = float(np.mean(xi**2)) if xi.size else 0.0
        # one pseudo-draw at the pooled value keeps unseen strata from being starved
        m2 = (sq + pooled) / (cnt + 1.0)
        score += m2 / max(scale, 1e-300) ** 2
    opt = prop * np.sqrt(score)
    if opt.sum() <= 0:
        return prop
    pi = (1 - uniform_share) * opt / opt.sum() + uniform_share * prop
    return pi / pi.sum()


def betting_allocation(
    st: Strata,
    prop: np.ndarray,
    s_cat: np.ndarray,
    targets: list[tuple[np.ndarray, float, float]],
    uniform_share: float,
    n_next: int,
) -> np.ndarray:
    """Allocation for the betting interval: the fewest distinct oracle calls, not draws.

    With d_k draws per unit of stratum k (with replacement, and a repeat costs no call), the
    stratum has cost about N_k (1 - exp(-d_k)) calls. A side of the betting interval can be bound
    by the range: a draw as extreme as the ranges allow could still come from the least sampled
    strata, the bets must stay safe against it, and only the sampling rate there, f = min_k d_k,
    rules it out (each draw per unit buys evidence in proportion to c / R, R the range on that
    side). Otherwise a side is bound by the variance, sum_k Y_k / d_k with Y_k = N_k E_k[ξ²]
    (ξ the unit's contribution). Minimising calls subject to both (Lagrange:
    N_k exp(-d_k) = ν Y_k / d_k²) gives d_k = f sqrt(E_k[ξ²] / E*) for the strata above the
    floor: Neyman's rule, but scaled to the least-sampled strata instead of the densest one,
    with E* = R ε |T| _VAR_SHARE / N (T the total bounded, _VAR_SHARE of its error budget taken
    as the variance's). A stratum where f sqrt(E_k / E*) passes _SATURATE, the largest value of
    d exp(-d / 2), has no such optimum: labelling it completely is cheaper, so it is
    "saturated" and takes all the draws the others leave (it is labelled after a few rounds and
    its further repeats are free). The others keep uniform_share * prop * r_k, which holds the
    least-sampled strata at weight 1 / uniform_share. With several (aggregate, group) targets
    each stratum takes the largest E_k / E* among them.

    The plain Neyman rule (``allocation``) ties the middle strata to the densest one and,
    since that one is labelled in full early, keeps spending calls on them; and its additive
    mixing leaves the sparse strata at uneven, larger weights. On the benchmark (Beta(0.01, 2)
    proxy, N = 10^6, 5%, values in [0, 100], everything else equal) this allocation needs 10%
    (AVG), 12% (SUM) and 16% (COUNT) fewer calls.
    """
    if st.k == 1:
        return prop
    cnt = np.bincount(s_cat, minlength=st.k)
    ratio = np.zeros(st.k)
    for xi, e_star, _ in targets:
        if not (np.isfinite(e_star) and e_star > 0):
            continue  # nothing seen to size strata by: proportional
        sq = np.bincount(s_cat, weights=xi**2, minlength=st.k)
        # one pseudo-draw at the pooled value keeps unseen strata from being written off
        m2 = (sq + float(np.mean(xi**2))) / (cnt + 1.0)
        ratio = np.maximum(ratio, m2 / e_star)
    r = np.sqrt(np.maximum(ratio, 1.0))
    sat = np.zeros(st.k, dtype=bool)
    while True:
        pi = floor_mix(prop * r, uniform_share, prop, sat)
        d = (cnt + pi * n_next) / st.sizes  # draws per unit after the next round
        f = float(d[~sat].min()) if (~sat).any() else 0.0
        new = ~sat & (r > 1.0) & (r * f >= _SATURATE)
        if not new.any():
            return pi
        sat |= new


def floor_mix(score: np.ndarray, share: float, prop: np.ndarray, sat: np.ndarray) -> np.ndarray:
    """Shares in proportion to ``score`` (= prop * r), none below the floor share * prop.

    With saturated strata (``sat``) the others get share * score, which puts an r = 1 stratum at
    the floor, and the saturated ones their floor plus what is left, in proportion to score
    (their repeats are free); without any (or with nothing left) the shares are
    max(a * score, floor) with a such that they sum to 1.
    """
    floor = share * prop
    if sat.any():
        pi = np.where(sat, floor, share * score)
        rest = 1.0 - float(pi.sum())
        if rest > 0:
            pi[sat] += rest * score[sat] / score[sat].sum()
            return pi
    lo_a, hi_a = 0.0, 1.0 / float(score.sum())
    for _ in range(60):
        a = (lo_a + hi_a) / 2.0
        if np.maximum(a * score, floor).sum() > 1.0:
            hi_a = a
        else:
            lo_a = a
    pi = np.maximum(lo_a * score, floor)
    return pi / pi.sum()
