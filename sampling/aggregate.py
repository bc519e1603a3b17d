"""COUNT / SUM / AVG with a relative error target (ABAE-style proxy stratification).

Design. Rows are split into ``strata`` equal-size strata by proxy rank (one stratum without a
proxy, i.e. uniform sampling). Each round draws rows i.i.d. from q(row) = π_k / N_k; the first
(pilot) round uses π_k ∝ N_k. Later rounds, for the CLT interval, use the variance-optimal
importance allocation π_k ∝ N_k · sqrt(E_k[ξ²]) estimated from the draws so far (ξ: a row's
contribution, e.g. the match indicator for COUNT, so π_k ∝ N_k · sqrt(p_k)), mixed with a
``uniform_share`` of proportional allocation. For the betting interval they use an allocation
that minimises distinct oracle calls instead (``_betting_allocation``): the strata dense enough
to be worth labelling completely take the bulk of the draws (their repeats cost nothing), the
others get Neyman's rule scaled to the least-sampled strata, which the interval needs at an even
rate to rule out extreme values it has not seen. Either way every row keeps probability
>= uniform_share / N and every importance weight stays <= 1 / uniform_share.

Intervals. Each draw gives an unbiased estimate x / (N q) of the population mean of x, in a
range known before the draw. A betting confidence sequence (Waudby-Smith & Ramdas) turns these
into an interval that is valid simultaneously at every round (anytime-valid), so sampling can
stop as soon as the target is met, and tolerates the allocation changing between rounds. AVG
is handled directly: for a candidate average A, the draws x·(v - A)/(N q) have mean zero exactly
when A is the true average, so the interval is the set of A that the betting test keeps. Bets
are the predictable plug-in ones of ``bounds``, truncated at _BET_CAP (0.95) of the largest bet
that stays safe against the worst draw the range allows. After a betting check that missed the
target, the next round is sized to what the interval still lacks (see _draws_to_target).

Bounds. ``bound="betting"`` is the interval above. ``bound="empirical"`` also uses it: the range
argument that makes empirical Bernstein worth its lost guarantee in the selection operators does
not arise here (the variance dominates; with ``value_bounds`` unknown the observed range is used
anyway), and measured on COUNT/SUM/AVG the empirical Bernstein interval needed 1.7-2.5x the
oracle calls of the betting one, which is finite-sample and anytime-valid. So an ``"empirical"``
request gets the betting interval and its guarantee (``finite_sample`` as for betting).
``bound="normal"`` gives CLT intervals checked after every round (asymptotic baseline, not
corrected for the repeated looks).

Relative error. With an interval [L, U] valid at 1 - δ_g, any estimate e with
U(1 - ε) <= e <= L(1 + ε) (for positive quantities) satisfies |e - truth| <= ε·|truth| whenever
the truth is in [L, U]; the target is met when that range is not empty.

δ split: Bonferroni over groups, δ_g = δ / G, each interval two-sided (δ_g / 2 per side). G is
``len(group_keys)`` when given; otherwise the number of groups seen in the pilot round (groups
first seen later are reported, flagged as outside the split).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from .bounds import Side, betting_log_wealth, find_boundary, plugin_bets
from .oracle import BudgetedOracle, Oracle, as_budgeted
from .results import AggregateResult, GroupEstimate
from .validation import (
    check_budget,
    check_confidence,
    check_fraction,
    check_positive_int,
    check_proxy,
    check_unit_interval,
)

log = logging.getLogger(__name__)

AGGREGATES = ("count", "sum", "avg")
_AGG_BOUNDS = ("betting", "empirical", "normal")
# interval used for each bound: "empirical" gets the (tighter, finite-sample) betting interval
_INTERVAL = {"betting": "betting", "empirical": "betting", "normal": "normal"}
_GROWTH = 1.25
# Fraction of the largest bet that keeps the wealth positive whatever the next draw (WSR's
# truncation c). Any c < 1 keeps the interval valid; c only sets what one worst-case draw can
# cost (the wealth times 1 - c). With a proxy the side that limits these intervals is bound by
# the range: an extreme value could still sit in the lightly sampled strata, and only their
# sampling rate rules it out, with evidence per draw linear in c. 0.95 instead of the 0.75 of
# the selection operators cut the calls of the benchmark's stratified AVG by 15% and SUM by 13%,
# at the price of 3 instead of 1.4 nats should such a draw arrive (the plug-in bets then shrink).
_BET_CAP = 0.95
# Past d * exp(-d / 2)'s maximum 2 / e (d draws per row) a stratum costs fewer calls labelled in
# full than sampled: see _betting_allocation.
_SATURATE = 2.0 / np.e
# Share of the error budget ε|T| that _betting_allocation leaves to the variance.
_VAR_SHARE = 0.25
# After a betting check that missed the target, the next round is at least this share of the
# draws so far (smaller rounds mostly cost interval computations).
_MIN_STEP = 0.03
# Defaults by interval. The betting design labels its densest strata almost completely, so the
# finer they are the fewer rows that takes: 16 strata, up to 64 on large tables (>= 15,000 rows
# a stratum). Its floor share 0.2 (weights <= 5) against 0.1, on the benchmark: AVG -6% calls,
# SUM -2%, COUNT +5%, and half the draws (repeats in the saturated strata) to compute with.
# The CLT design keeps 16 strata and 0.1, which suit it better.
_STRATA_CLT, _STRATA_MIN, _STRATA_MAX, _ROWS_PER_STRATUM = 16, 16, 64, 15_000
_UNIFORM_SHARE = {"normal": 0.1, "betting": 0.2}


class _Strata:
    """Equal-size strata by proxy rank, and draws from an allocation over them."""

    def __init__(self, n_rows: int, proxy: np.ndarray | None, k: int) -> None:
        self.n = n_rows
        if proxy is None or k == 1:
            self.order = np.arange(n_rows)
            k = 1
        else:
            self.order = np.argsort(proxy, kind="stable")
        k = max(1, min(k, n_rows))
        self.bounds = np.linspace(0, n_rows, k + 1).astype(np.int64)
        self.sizes = np.diff(self.bounds)
        self.k = k

    def draw(self, rng: np.random.Generator, pi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        strata = rng.choice(self.k, size=n, p=pi)
        offs = (rng.random(n) * self.sizes[strata]).astype(np.int64)
        offs = np.minimum(offs, self.sizes[strata] - 1)
        return self.order[self.bounds[strata] + offs], strata


def _normalise_answer(ans: Any, n: int, agg: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if isinstance(ans, tuple):
        parts = list(ans) + [None] * (3 - len(ans))
        matches, values, groups = parts[:3]
    else:
        matches, values, groups = ans, None, None
    m = np.asarray(matches)
    if m.shape != (n,):
        raise ValueError(f"oracle returned {m.shape} matches for {n} rows")
    m = m.astype(bool)
    if values is None:
        if agg != "count":
            raise ValueError(f"{agg.upper()} needs the oracle to return (matches, values[, groups])")
        v = np.ones(n)
    else:
        v = np.asarray(values, dtype=np.float64)
        if v.shape != (n,):
            raise ValueError(f"oracle returned {v.shape} values for {n} rows")
        if agg != "count" and not np.all(np.isfinite(v[m])):
            raise ValueError("oracle returned non-finite values for matching rows")
    g = None if groups is None else np.asarray(groups)
    if g is not None and g.shape != (n,):
        raise ValueError(f"oracle returned {g.shape} groups for {n} rows")
    return m, np.where(m, v, 0.0) if agg != "count" else v, g


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
    (the same betting interval: see the module docstring) or ``"normal"`` (CLT intervals,
    asymptotic baseline). The result's ``bound`` is the one requested; ``details["interval"]``
    names the interval computed. ``strata`` (default: 16, or for the betting interval up to 64
    on large tables) and ``uniform_share`` (default 0.2 for the betting interval, 0.1 for the CLT
    one) shape the stratified design: see the module docstring.
    """
    n_rows = check_positive_int("n_rows", n_rows)
    agg = str(agg).lower()
    if agg not in AGGREGATES:
        raise ValueError(f"agg must be one of {', '.join(AGGREGATES)}, got {agg!r}")
    eps = check_fraction("error target", error_target)
    conf = check_confidence(confidence)
    budget = check_budget(budget)
    if bound not in _AGG_BOUNDS:
        raise ValueError(f"aggregates support bound in {_AGG_BOUNDS}, got {bound!r}")
    if uniform_share is not None:
        uniform_share = check_unit_interval("uniform_share", uniform_share)
    if strata is not None:
        strata = check_positive_int("strata", strata)
    if proxy is not None:
        proxy = check_proxy(proxy, n_rows)
    if value_bounds is not None:
        vlo, vhi = (float(v) for v in value_bounds)
        if not (np.isfinite(vlo) and np.isfinite(vhi)) or vlo > vhi:
            raise ValueError(f"value_bounds must be finite (lo, hi) with lo <= hi, got {value_bounds!r}")
    if group_keys is not None and len(group_keys) == 0:
        raise ValueError("group_keys is empty")
    delta = 1.0 - conf
    bo = as_budgeted(oracle, budget)
    if bo.remaining >= n_rows - bo.calls:
        return _census(n_rows, bo, agg, eps, conf, group_keys, bound, budget)
    method = _INTERVAL[bound]
    if uniform_share is None:
        uniform_share = _UNIFORM_SHARE[method]
    if strata is None:
        auto = int(np.clip(n_rows // _ROWS_PER_STRATUM, _STRATA_MIN, _STRATA_MAX))
        strata = auto if method == "betting" else _STRATA_CLT

    st = _Strata(n_rows, proxy, strata if proxy is not None else 1)
    prop = st.sizes / n_rows
    pi = prop.copy()
    strata_all: list[np.ndarray] = []
    wmax_all: list[np.ndarray] = []
    pi_all: list[np.ndarray] = []
    horizon_all: list[np.ndarray] = []
    answers: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    horizon = float(budget)  # the bets of each round are tuned for the sample size then expected
    n_round = pilot_size or int(min(bo.remaining, max(20 * st.k, 200, bo.remaining // 50)))
    rounds = 0
    keys: list[Any] | None = list(group_keys) if group_keys is not None else None
    n_split = len(keys) if keys is not None else None
    last = None
    while True:
        rows, s_idx = st.draw(rng, pi, n_round)
        # a prefix of the i.i.d. sequence that fits the budget (a stopping time: fine for the
        # anytime-valid intervals)
        fresh = np.cumsum(~bo.is_labelled(rows))
        keep = int(np.searchsorted(fresh, bo.remaining, side="right"))
        rows, s_idx = rows[:keep], s_idx[:keep]
        if rows.size:
            rounds += 1
            answers.append(_normalise_answer(bo(rows), rows.size, agg))
            strata_all.append(s_idx)
            wmax_all.append(np.full(rows.size, float(np.max(prop / pi))))
            pi_all.append(pi[s_idx])
            horizon_all.append(np.full(rows.size, horizon))
        m, v, g = _concat_answers(answers)
        s_cat = np.concatenate(strata_all) if strata_all else np.empty(0, dtype=np.int64)
        w = (prop[s_cat] / np.concatenate(pi_all)) if pi_all else np.empty(0)  # = 1/(N q)
        wmax = np.concatenate(wmax_all) if wmax_all else np.empty(0)
        hz = np.concatenate(horizon_all) if horizon_all else np.empty(0)
        if n_split is None:
            seen = _group_list(g, m)
            n_split = max(len(seen), 1)
            keys = seen
        if value_bounds is None:
            vv = v[m] if m.any() else np.zeros(1)
            bounds_now = (
                (min(float(vv.min()), 0.0), max(float(vv.max()), 0.0)) if agg != "count" else (0.0, 1.0)
            )
        else:
            bounds_now = (vlo, vhi) if agg != "count" else (0.0, 1.0)
        final = keep < n_round or bo.remaining == 0
        args = (agg, n_rows, m, v, g, w, wmax, keys, n_split, delta, eps, bounds_now)
        # The betting interval is never much narrower than the CLT one; skip its (costly)
        # computation while even the CLT interval misses the target. Checking or not at a round
        # is a data-dependent choice, which the anytime-valid interval allows.
        last = _intervals(*args, "normal", hz)
        checked = method == "betting" and (final or all(e.target_met for e in last.values()))
        clt = last
        if checked:
            last = _intervals(*args, method, hz)
        log.debug("round %d: %d draws, %d oracle calls, last round: %s", rounds, w.size, bo.calls, final)
        if final or all(e.target_met for e in last.values()):
            break
        n_round = int(min(bo.remaining * 4, max(n_round * _GROWTH, 100)))
        if checked:
            # the betting interval missed: draw about what it still lacks, not a whole 25% more
            n_round = min(n_round, _draws_to_target(last, w.size, eps))
        if method == "betting":
            alloc = (agg, st, prop, s_cat, m, v, g, w, last, uniform_share, eps, bounds_now, n_round)
            pi = _betting_allocation(*alloc)
        else:
            pi = _allocation(agg, st, prop, s_cat, m, v, g, last, uniform_share)
        horizon = _expected_draws(clt, w.size, eps, n_round, budget)

    return _result(
        agg,
        last,
        n_rows,
        bo,
        int(w.size),
        rounds,
        budget,
        eps,
        conf,
        delta,
        n_split,
        keys,
        bound,
        value_bounds is not None or agg == "count",
        "stratified" if st.k > 1 else "uniform",
        st.k,
    )


def _concat_answers(
    answers: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if not answers:
        return np.zeros(0, bool), np.zeros(0), None
    m = np.concatenate([a[0] for a in answers])
    v = np.concatenate([a[1] for a in answers])
    groups = [a[2] for a in answers]
    g = None if any(x is None for x in groups) else np.concatenate(groups)
    return m, v, g


def _expected_draws(groups: dict[Any, GroupEstimate], n: int, eps: float, n_next: int, budget: int) -> float:
    """Draws the CLT interval suggests the target needs (the betting interval is a little wider)."""
    worst = 0.0
    for ge in groups.values():
        scale = abs(ge.estimate)
        half = (ge.ci_high - ge.ci_low) / 2.0
        worst = max(worst, half / scale if scale > 0 else np.inf)
    need = n * (worst / eps) ** 2 * 1.5 if np.isfinite(worst) else float(budget)
    return float(np.clip(need, n + n_next, max(budget, n + n_next)))


def _draws_to_target(groups: dict[Any, GroupEstimate], n: int, eps: float) -> int:
    """Further draws after which the intervals would meet the target if their widths shrank like
    1/n (the range-bound side of a betting interval does; a variance-bound side shrinks slower,
    so this errs low and the next check comes early rather than late); at least _MIN_STEP * n."""
    shrink = 1.0
    for ge in groups.values():
        if not np.isfinite(ge.delta):
            continue  # groups outside the δ split never meet the target
        lo, hi, est = ge.ci_low, ge.ci_high, ge.estimate
        if hi < 0:
            lo, hi, est = -hi, -lo, -est
        if lo <= 0 or est <= 0:
            return n  # no relative error yet: no prediction
        # widths shrunk by s meet it when (est + up/s)(1 - ε) <= (est - down/s)(1 + ε)
        shrink = max(shrink, ((hi - est) * (1 - eps) + (est - lo) * (1 + eps)) / (2 * eps * est))
    return int(max(n * (shrink - 1.0), n * _MIN_STEP, 100))


def _group_list(g: np.ndarray | None, m: np.ndarray) -> list[Any]:
    if g is None:
        return [None]
    return sorted(np.unique(g[m]).tolist(), key=repr) or [None]


def _intervals(
    agg: str,
    n_rows: int,
    m: np.ndarray,
    v: np.ndarray,
    g: np.ndarray | None,
    w: np.ndarray,
    wmax: np.ndarray,
    keys: list[Any],
    n_split: int,
    delta: float,
    eps: float,
    vb: tuple[float, float],
    bound: str,
    horizon: np.ndarray,
) -> dict[Any, GroupEstimate]:
    out: dict[Any, GroupEstimate] = {}
    extra = [] if g is None else [k for k in _group_list(g, m) if k not in keys]
    d_g = delta / n_split
    for key in list(keys) + extra:
        in_g = m if key is None or g is None else m & (g == key)
        if agg == "avg":
            lo, hi, est = _avg_interval(in_g, v, w, wmax, vb, d_g, bound, horizon)
        else:
            x = in_g * (v if agg == "sum" else 1.0)
            a = min(0.0, vb[0]) if agg == "sum" else 0.0
            b = max(0.0, vb[1]) if agg == "sum" else 1.0
            lo, hi, est = _mean_interval(x, a, b, w, wmax, d_g, bound, horizon)
            lo, hi, est = lo * n_rows, hi * n_rows, est * n_rows
        met, est = _relative_check(lo, hi, est, eps)
        out[key] = GroupEstimate(
            group=key,
            estimate=est,
            ci_low=lo,
            ci_high=hi,
            target_met=met and key not in extra,
            delta=d_g if key not in extra else float("nan"),
            matches_seen=int(np.count_nonzero(in_g)),
        )
    return out


def _relative_check(lo: float, hi: float, est: float, eps: float) -> tuple[bool, float]:
    """Is there an estimate within ε·|truth| of every value in [lo, hi]? Returns (met, estimate)."""
    est = float(min(max(est, lo), hi))
    if lo > 0:
        a, b = hi * (1 - eps), lo * (1 + eps)
    elif hi < 0:
        a, b = lo * (1 + eps), hi * (1 - eps)
    else:
        return False, est
    if a <= b:
        return True, float(min(max(est, a), b))
    return False, est


def _log_wealth(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, lam: np.ndarray, side: Side) -> float:
    """Largest log-wealth of the bettor against "mean of x >= 0" (upper) or "<= 0" (lower), each
    x[i] known beforehand to lie in [lo[i], hi[i]], with predictable bet sizes ``lam`` truncated at
    _BET_CAP of the largest safe bet (see ``bounds.betting_log_wealth``)."""
    # delta only sizes default bets; these are given
    return float(betting_log_wealth(x, lo, hi, 0.0, 0.5, side, lam_tilde=lam, cap=_BET_CAP))


def _mean_interval(
    x: np.ndarray,
    a: float,
    b: float,
    w: np.ndarray,
    wmax: np.ndarray,
    delta: float,
    bound: str,
    horizon: np.ndarray,
) -> tuple[float, float, float]:
    """Interval for the population mean of x (x in [a, b] for every row) from weighted draws."""
    n = x.size
    if n == 0:
        return a, b, (a + b) / 2
    z = (x - a) * w  # unbiased for mean(x) - a; each draw in [0, (b - a) * wmax]
    est = float(z.mean()) + a
    if bound == "normal":
        se = float(z.std(ddof=1)) / np.sqrt(n) if n > 1 else np.inf
        h = stats.norm.ppf(1 - delta / 2) * se
        return max(est - h, a), min(est + h, b), est
    hi_t = (b - a) * wmax
    lam = plugin_bets(z, 0.0, hi_t[0], delta / 2, horizon, recent=True)
    thr = np.log(2.0 / delta)

    def score(side: Side) -> Callable[[float], float]:
        return lambda mu: _log_wealth(z - mu, np.full(n, -mu), hi_t - mu, lam, side) - thr

    top = float(b - a)  # the mean of x - a cannot exceed b - a
    centre = float(np.clip(est - a, 0.0, top))
    xtol = 1e-5 * max(centre, 1e-9 * top)
    lower = find_boundary(score("lower"), 0.0, top, rejected_high=False, start=centre, xtol=xtol)
    upper = find_boundary(score("upper"), 0.0, top, rejected_high=True, start=centre, xtol=xtol)
    return lower + a, upper + a, est


def _avg_interval(
    in_g: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    wmax: np.ndarray,
    vb: tuple[float, float],
    delta: float,
    bound: str,
    horizon: np.ndarray,
) -> tuple[float, float, float]:
    """Interval for the average value over matching rows of a group (mean-zero betting test)."""
    vlo, vhi = vb
    zc = in_g * w
    zs = in_g * v * w
    n = zc.size
    if n == 0 or zc.sum() == 0:
        return vlo, vhi, (vlo + vhi) / 2
    est = float(zs.sum() / zc.sum())
    if bound == "normal":
        resid = zs - est * zc
        se = float(resid.std(ddof=1)) / (np.sqrt(n) * float(zc.mean())) if n > 1 else np.inf
        h = stats.norm.ppf(1 - delta / 2) * se
        return max(est - h, vlo), min(est + h, vhi), est
    # Bet sizes from a reference variable using the running estimate (predictable and
    # independent of the candidate A, which keeps the test monotone in A).
    cs, cc = np.cumsum(zs), np.cumsum(zc)
    prev_s = np.concatenate([[0.0], cs[:-1]])
    prev_c = np.concatenate([[0.0], cc[:-1]])
    a_prev = np.where(prev_c > 0, prev_s / np.where(prev_c > 0, prev_c, 1.0), (vlo + vhi) / 2)
    ref = zs - a_prev * zc
    width = (vhi - vlo) * wmax
    lam = plugin_bets(ref, -width[0] / 2, width[0] / 2, delta / 2, horizon, recent=True)
    thr = np.log(2.0 / delta)

    def score(side: Side) -> Callable[[float], float]:
        def f(cand: float) -> float:
            x = zs - cand * zc
            lo = min(0.0, vlo - cand) * wmax
            hi = max(0.0, vhi - cand) * wmax
            return _log_wealth(x, lo, hi, lam, side) - thr

        return f

    # "lower" rejects A below the truth (mean of x > 0), "upper" rejects A above it
    centre = float(np.clip(est, vlo, vhi))
    xtol = 1e-5 * max(abs(centre), 1e-9 * (vhi - vlo))
    lower = find_boundary(score("lower"), vlo, vhi, rejected_high=False, start=centre, xtol=xtol)
    upper = find_boundary(score("upper"), vlo, vhi, rejected_high=True, start=centre, xtol=xtol)
    return lower, upper, est


def _allocation(
    agg: str,
    st: _Strata,
    prop: np.ndarray,
    s_cat: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    g: np.ndarray | None,
    groups: dict[Any, GroupEstimate],
    uniform_share: float,
) -> np.ndarray:
    """π_k ∝ N_k sqrt(Σ_g E_k[ξ_g²] / T_g²), mixed with proportional allocation."""
    if st.k == 1:
        return prop
    score = np.zeros(st.k)
    for key, ge in groups.items():
        in_g = m if key is None or g is None else m & (g == key)
        if agg == "count":
            xi = in_g.astype(float)
        elif agg == "sum":
            xi = in_g * v
        else:
            xi = in_g * (v - ge.estimate)
        # normalise by the group's target so relative errors are balanced across groups
        if agg == "avg":
            scale = abs(ge.estimate) * max(float(np.mean(in_g)), 1e-12)
        else:
            scale = abs(ge.estimate) / st.n
        scale = scale if scale > 0 else 1.0
        sq = np.bincount(s_cat, weights=xi**2, minlength=st.k)
        cnt = np.bincount(s_cat, minlength=st.k)
        pooled = float(np.mean(xi**2)) if xi.size else 0.0
        # one pseudo-draw at the pooled value keeps unseen strata from being starved
        m2 = (sq + pooled) / (cnt + 1.0)
        score += m2 / max(scale, 1e-300) ** 2
    opt = prop * np.sqrt(score)
    if opt.sum() <= 0:
        return prop
    pi = (1 - uniform_share) * opt / opt.sum() + uniform_share * prop
    return pi / pi.sum()


def _betting_allocation(
    agg: str,
    st: _Strata,
    prop: np.ndarray,
    s_cat: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    g: np.ndarray | None,
    w: np.ndarray,
    groups: dict[Any, GroupEstimate],
    uniform_share: float,
    eps: float,
    vb: tuple[float, float],
    n_next: int,
) -> np.ndarray:
    """Allocation for the betting interval: the fewest distinct oracle calls, not draws.

    With d_k draws per row of stratum k (with replacement, and a repeat costs no call), the
    stratum has cost about N_k (1 - exp(-d_k)) calls. A side of the betting interval can be bound
    by the range: a draw as extreme as the value bounds allow could still come from the least
    sampled strata, the bets must stay safe against it, and only the sampling rate there,
    f = min_k d_k, rules it out (each draw per row buys evidence in proportion to c / R, R the
    row range on that side). Otherwise a side is bound by the variance, sum_k Y_k / d_k with
    Y_k = N_k E_k[ξ²] (ξ the row's contribution). Minimising calls subject to both (Lagrange:
    N_k exp(-d_k) = ν Y_k / d_k²) gives d_k = f sqrt(E_k[ξ²] / E*) for the strata above the
    floor: Neyman's rule, but scaled to the least-sampled strata instead of the densest one,
    with E* = R ε |T| _VAR_SHARE / N (T the total bounded, _VAR_SHARE of its error budget taken
    as the variance's). A stratum where f sqrt(E_k / E*) passes _SATURATE, the largest value of
    d exp(-d / 2), has no such optimum: labelling it completely is cheaper, so it is
    "saturated" and takes all the draws the others leave (it is labelled after a few rounds and
    its further repeats are free). The others keep uniform_share * prop * r_k, which holds the
    least-sampled strata at weight 1 / uniform_share.

    The plain Neyman rule (``_allocation``) ties the middle strata to the densest one and,
    since that one is labelled in full early, keeps spending calls on them; and its additive
    mixing leaves the sparse strata at uneven, larger weights. On the benchmark (Beta(0.01, 2)
    proxy, N = 10^6, 5%, values in [0, 100], everything else equal) this allocation needs 10%
    (AVG), 12% (SUM) and 16% (COUNT) fewer calls.
    """
    if st.k == 1:
        return prop
    cnt = np.bincount(s_cat, minlength=st.k)
    ratio = np.zeros(st.k)
    for key, ge in groups.items():
        in_g = m if key is None or g is None else m & (g == key)
        if agg == "count":
            xi, span, total = in_g.astype(float), 1.0, abs(ge.estimate)
        elif agg == "sum":
            xi, span, total = in_g * v, max(abs(vb[0]), abs(vb[1])), abs(ge.estimate)
        else:
            xi = in_g * (v - ge.estimate)
            span = max(vb[1] - ge.estimate, ge.estimate - vb[0])
            total = abs(ge.estimate) * st.n * float(np.mean(in_g * w))  # |AVG| x COUNT
        e_star = span * eps * total * _VAR_SHARE / st.n
        if not (np.isfinite(e_star) and e_star > 0):
            continue  # nothing seen to size strata by: proportional
        sq = np.bincount(s_cat, weights=xi**2, minlength=st.k)
        # one pseudo-draw at the pooled value keeps unseen strata from being written off
        m2 = (sq + float(np.mean(xi**2))) / (cnt + 1.0)
        ratio = np.maximum(ratio, m2 / e_star)
    r = np.sqrt(np.maximum(ratio, 1.0))
    sat = np.zeros(st.k, dtype=bool)
    while True:
        pi = _floor_mix(prop * r, uniform_share, prop, sat)
        d = (cnt + pi * n_next) / st.sizes  # draws per row after the next round
        f = float(d[~sat].min()) if (~sat).any() else 0.0
        new = ~sat & (r > 1.0) & (r * f >= _SATURATE)
        if not new.any():
            return pi
        sat |= new


def _floor_mix(score: np.ndarray, share: float, prop: np.ndarray, sat: np.ndarray) -> np.ndarray:
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


def _census(
    n_rows: int,
    bo: BudgetedOracle,
    agg: str,
    eps: float,
    conf: float,
    group_keys: Sequence[Any] | None,
    bound: str,
    budget: int,
) -> AggregateResult:
    """Budget covers the table: label everything and answer exactly."""
    rows = np.arange(n_rows)
    m, v, g = _normalise_answer(bo(rows), n_rows, agg)
    keys = list(group_keys) if group_keys is not None else _group_list(g, m)
    out: dict[Any, GroupEstimate] = {}
    for key in keys:
        in_g = m if key is None or g is None else m & (g == key)
        if agg == "count":
            val = float(in_g.sum())
        elif agg == "sum":
            val = float(v[in_g].sum())
        else:
            val = float(v[in_g].mean()) if in_g.any() else float("nan")
        out[key] = GroupEstimate(key, val, val, val, True, 0.0, int(in_g.sum()))
    return _result(
        agg,
        out,
        n_rows,
        bo,
        n_rows,
        1,
        budget,
        eps,
        conf,
        1 - conf,
        len(keys),
        keys,
        bound,
        True,
        "census",
        1,
    )


def _result(
    agg: str,
    groups: dict[Any, GroupEstimate],
    n_rows: int,
    bo: BudgetedOracle,
    draws: int,
    rounds: int,
    budget: int,
    eps: float,
    conf: float,
    delta: float,
    n_split: int,
    keys: list[Any] | None,
    bound: str,
    bounded_values: bool,
    design: str,
    n_strata: int,
) -> AggregateResult:
    met = all(ge.target_met for ge in groups.values())
    single = list(groups.values())[0] if len(groups) == 1 and None in groups else None
    need = None
    hint = None
    if not met:
        worst = 0.0
        for ge in groups.values():
            mid = abs(ge.estimate) if ge.estimate else 0.0
            half = (ge.ci_high - ge.ci_low) / 2
            worst = max(worst, half / mid if mid > 0 else np.inf)
        if np.isfinite(worst) and worst > 0:
            # interval half-widths shrink roughly like 1/sqrt(n)
            need = int(np.ceil(bo.calls * (worst / eps) ** 2))
            hint = (
                f"error target {eps:.1%} at confidence {conf:.0%} not reached with {bo.calls} oracle "
                f"calls (relative half-width {worst:.1%}); about {need} calls would likely reach it"
            )
        else:
            hint = (
                f"error target {eps:.1%} not reached with {bo.calls} oracle calls: too few matching "
                "rows were seen to estimate the budget needed"
            )
    return AggregateResult(
        agg=agg,
        estimate=single.estimate if single else float("nan"),
        ci_low=single.ci_low if single else float("nan"),
        ci_high=single.ci_high if single else float("nan"),
        groups=groups,
        oracle_calls=bo.calls,
        draws=draws,
        rounds=rounds,
        budget=bo.budget,
        error_target=eps,
        confidence=conf,
        delta_split={"per_group": delta / max(n_split, 1), "groups_in_split": float(n_split)},
        design=design,
        bound=bound,
        finite_sample=_INTERVAL[bound] == "betting" and bounded_values or design == "census",
        target_met=met,
        budget_needed=need,
        budget_hint=hint,
        details={
            "strata": n_strata,
            "group_keys": keys,
            "n_rows": n_rows,
            "interval": "exact (census)" if design == "census" else _INTERVAL[bound],
        },
    )
