"""Confidence bounds for the mean of bounded random variables.

Finite-sample methods (valid at every n for independent observations in a known range):

* ``"betting"``: Waudby-Smith & Ramdas style betting test / confidence sequence with predictable
  plug-in bets. Anytime-valid (Ville's inequality), so it stays valid when sampling stops at a
  data-dependent time, and it tolerates a different known range per observation (importance
  sampling with a changing design). Usually the tightest.
* ``"bernstein"``: empirical Bernstein bound of Maurer & Pontil (2009), fixed n.
* ``"hoeffding"``: Hoeffding's inequality, fixed n.

Methods without a finite-sample guarantee (results computed with them report
``finite_sample=False``):

* ``"empirical"``: the empirical Bernstein bound of Maurer & Pontil (2009),
  ``mean ± (sqrt(2 V log(2/δ) / n) + 7 R log(2/δ) / (3 (n - 1)))`` with V the sample variance,
  but with the range R read off the sample (largest minus smallest observation) instead of the
  known worst-case range. With the true range it would be ``"bernstein"``; the observed range
  can only be smaller, so the guarantee is lost exactly when a rare, extreme observation (e.g. a
  positive with a large importance weight) has not been drawn yet. When every observation is
  equal (observed range 0) the radius is 0 and the bound is that common value, as with the CLT.
  In exchange it does not pay for the worst case the data never showed: with importance weights
  up to 1/mix it is far tighter than the finite-sample methods, and it keeps the 7R/(3(n-1))
  term that makes it much more conservative than the CLT on skewed data (on our benchmarks it
  met every target where ``"normal"`` did not). It is a fixed-n bound, not anytime-valid.
* ``"normal"``: the CLT bound used by the SUPG reference implementation; asymptotic only, offered
  as a baseline.

Importance-weighted means: if ``v`` lies in [0, 1] and the weight ``w`` = u(x)/q(x) is at most
``max_weight`` (known, because the sampling distribution q is ours), then ``w * v`` lies in
[0, max_weight]; the bounds below are applied to that variable.

Exact bounds for simple random samples of 0/1 variables (Clopper-Pearson, hypergeometric) are
here too because some designs make them applicable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from scipy import optimize, stats

Method = Literal["betting", "bernstein", "hoeffding", "empirical", "normal"]
Side = Literal["upper", "lower"]
METHODS: tuple[str, ...] = ("betting", "bernstein", "hoeffding", "empirical", "normal")
FINITE_SAMPLE_METHODS = frozenset({"betting", "bernstein", "hoeffding"})

# Fraction of the largest safe bet that the betting strategy may stake (WSR use 1/2 to 3/4).
_BET_CAP = 0.75


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown bound method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def _check_delta(delta: float) -> None:
    if not 0.0 < float(delta) < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def plugin_bets(
    x: np.ndarray,
    lo0: np.ndarray | float,
    hi0: np.ndarray | float,
    delta: float,
    horizon: int | np.ndarray | None = None,
    recent: bool = False,
) -> np.ndarray:
    """Predictable plug-in bet sizes (Waudby-Smith & Ramdas): bet i uses only x[..., :i].

    lambda_i = sqrt(2 log(1/delta) / (var_{i-1} * D_i)) with a running variance that starts from
    one pseudo-observation of variance ((hi0 - lo0)/2)^2 at the mid-range (``recent``: over the
    latest half of the past observations only, for designs that improve); D_i = horizon for a
    fixed sample size, else i log(1 + i) (anytime). ``horizon`` may be an array (one value per
    observation) as long as each value was chosen before that observation was seen.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    width0 = np.maximum(np.asarray(hi0, dtype=np.float64) - lo0, 1e-300)
    mid0 = (np.asarray(hi0, dtype=np.float64) + lo0) / 2.0
    i = np.arange(n, dtype=np.float64)
    zero = np.zeros(x.shape[:-1] + (1,))
    c1 = np.concatenate([zero, np.cumsum(x, axis=-1)], axis=-1)
    c2 = np.concatenate([zero, np.cumsum(x * x, axis=-1)], axis=-1)
    # recent: variance of the latest half of the past draws, which follows a changing design
    start = np.floor(i / 2.0).astype(np.int64) if recent else np.zeros(n, dtype=np.int64)
    end = np.arange(n)
    cnt = (end - start).astype(np.float64)
    s1 = c1[..., end] - c1[..., start]
    s2 = c2[..., end] - c2[..., start]
    # one pseudo-observation at mid-range with variance (width/2)^2, then the window
    mean = (mid0 + s1) / (cnt + 1.0)
    sq = s2 - 2.0 * mean * s1 + cnt * mean**2 + (mid0 - mean) ** 2 + width0**2 / 4.0
    var_prev = np.maximum(sq / (cnt + 1.0), 1e-12 * width0**2)
    if horizon is None:
        denom = (i + 1.0) * np.log(i + 2.0)
    else:
        denom = np.broadcast_to(np.asarray(horizon, dtype=np.float64), i.shape)
    return np.sqrt(2.0 * np.log(1.0 / delta) / (var_prev * denom))


def betting_log_wealth(
    x: np.ndarray,
    lo: np.ndarray | float,
    hi: np.ndarray | float,
    m: np.ndarray | float,
    delta: float,
    side: Side,
    horizon: int | None = None,
    lam_tilde: np.ndarray | None = None,
    cap: float = _BET_CAP,
) -> np.ndarray:
    """Largest log-wealth reached by a bettor against ``mean >= m`` (side upper) or ``<= m``.

    ``x`` has observations on its last axis; ``lo``/``hi`` (the known range of each observation)
    broadcast against ``x``; ``m`` broadcasts against ``x[..., :1]``. Under the null the wealth
    is a non-negative supermartingale, so P(max wealth >= 1/delta) <= delta. The bet sizes do not
    depend on ``m`` except through the safety cap, which keeps the wealth monotone in ``m``
    (so the rejected means form a half-line and bisection finds the bound). ``lam_tilde`` (bet
    sizes before the cap, predictable) overrides the default plug-in computed from ``x``; ``cap``
    (below 1) is the share of the largest safe bet a bet may stake.
    """
    x = np.asarray(x, dtype=np.float64)
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), x.shape)
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), x.shape)
    m = np.asarray(m, dtype=np.float64)
    n = x.shape[-1]
    if n == 0:
        return np.zeros(np.broadcast_shapes(x.shape[:-1], m.shape[:-1] if m.ndim else ()))
    if lam_tilde is None:
        lam_tilde = plugin_bets(x, lo[..., :1], hi[..., :1], delta, horizon)
    tiny = 1e-12 * (hi - lo) + 1e-300
    if side == "upper":
        lam = np.minimum(lam_tilde, cap / np.maximum(hi - m, tiny))
        factor = 1.0 - lam * (x - m)
    elif side == "lower":
        lam = np.minimum(lam_tilde, cap / np.maximum(m - lo, tiny))
        factor = 1.0 + lam * (x - m)
    else:
        raise ValueError(f"side must be 'upper' or 'lower', got {side!r}")
    logw = np.cumsum(np.log(np.maximum(factor, 1e-300)), axis=-1)
    return np.maximum(logw.max(axis=-1), 0.0)


def find_boundary(
    score: Callable[[float], float],
    a: float,
    b: float,
    rejected_high: bool,
    start: float | None = None,
    xtol: float | None = None,
) -> float:
    """Boundary of a monotone family of tests on [a, b], conservatively rounded.

    ``score(m) >= 0`` means "m is rejected". If ``rejected_high``, the rejected values form
    [m*, b] and the result is a rejected value >= m* (an upper confidence bound); otherwise
    they form [a, m*] and the result is a rejected value <= m* (a lower bound). If no value
    is rejected the far end of the range is returned. ``start`` (the point estimate) is
    used to bracket m* quickly; Brent's method then finds it to ``xtol``.
    """
    inner, outer = (b, a) if rejected_high else (a, b)
    if score(inner) < 0:
        return inner
    if xtol is None:
        xtol = 1e-6 * abs(b - a)
    if score(outer) >= 0:
        return outer
    if start is not None and min(a, b) < start < max(a, b):
        if score(start) >= 0:
            inner = start
        else:
            outer = start
            for frac in (1e-4, 1e-3, 1e-2, 1e-1):
                probe = start + (inner - start) * frac
                if score(probe) >= 0:
                    inner = probe
                    break
                outer = probe
    root = optimize.brentq(score, min(inner, outer), max(inner, outer), xtol=xtol)
    # step outwards until the returned value is itself rejected (conservative rounding)
    step = xtol
    direction = 1.0 if rejected_high else -1.0
    m = root
    while score(m) < 0:
        m = root + direction * step
        step *= 2.0
        if (rejected_high and m >= inner) or (not rejected_high and m <= inner):
            return inner
    return m


def _betting_bound(
    x: np.ndarray,
    lo: np.ndarray | float,
    hi: np.ndarray | float,
    delta: float,
    side: Side,
    horizon: int | None,
) -> float:
    x = np.asarray(x, dtype=np.float64)
    thr = np.log(1.0 / delta)
    lam = plugin_bets(x, np.min(lo), np.max(hi), delta, horizon)

    def score(m: float) -> float:
        return float(betting_log_wealth(x, lo, hi, m, delta, side, horizon, lam)) - thr

    lo_b, hi_b = float(np.min(lo)), float(np.max(hi))
    centre = float(np.clip(x.mean(), lo_b, hi_b))
    return find_boundary(score, lo_b, hi_b, rejected_high=side == "upper", start=centre)


def empirical_bernstein_radius(x: np.ndarray, delta: np.ndarray | float) -> np.ndarray:
    """One-sided radius of the ``"empirical"`` bound for each row of ``x`` (observations on the
    last axis, n >= 2): sqrt(2 V log(2/δ)/n) + 7 R log(2/δ)/(3(n-1)), V the sample variance
    (ddof 1) and R = max - min of the row. Not finite-sample valid (R is estimated); see the
    module docstring."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    if n < 2:
        raise ValueError("the empirical Bernstein bound needs at least 2 observations")
    var = np.maximum(x.var(axis=-1, ddof=1), 0.0)
    rng_obs = x.max(axis=-1) - x.min(axis=-1)
    log_term = np.log(2.0 / np.asarray(delta, dtype=np.float64))
    return np.sqrt(2.0 * var * log_term / n) + 7.0 * rng_obs * log_term / (3.0 * (n - 1))


def _closed_form(x: np.ndarray, lo: float, hi: float, delta: float, side: Side, method: str) -> float:
    n = x.size
    width = hi - lo
    if n == 0:
        return hi if side == "upper" else lo
    mean = float(x.mean())
    if method == "hoeffding":
        rad = width * np.sqrt(np.log(1.0 / delta) / (2.0 * n))
    elif method == "bernstein":
        if n < 2:
            return hi if side == "upper" else lo
        s = (x - lo) / width if width > 0 else np.zeros_like(x)
        var = float(s.var(ddof=1))
        log_term = np.log(2.0 / delta)
        rad = width * (np.sqrt(2.0 * var * log_term / n) + 7.0 * log_term / (3.0 * (n - 1)))
    elif method == "empirical":
        if n < 2:
            return hi if side == "upper" else lo
        rad = float(empirical_bernstein_radius(x, delta))
    elif method == "normal":
        if n < 2:
            return hi if side == "upper" else lo
        rad = stats.norm.ppf(1.0 - delta) * float(x.std(ddof=1)) / np.sqrt(n)
    else:
        raise ValueError(f"unknown method {method!r}")
    out = mean + rad if side == "upper" else mean - rad
    return float(min(max(out, lo), hi))


def mean_bound(
    x: np.ndarray,
    lo: float | np.ndarray,
    hi: float | np.ndarray,
    delta: float,
    side: Side,
    method: str = "betting",
    horizon: int | None = None,
) -> float:
    """One-sided bound on the mean of independent observations ``x`` with ``lo <= x <= hi``.

    With probability at least 1 - delta the true mean is <= the upper bound (side="upper") or
    >= the lower bound (finite-sample methods; ``"empirical"`` and ``"normal"`` only
    approximately, see the module docstring; for them [lo, hi] only clips the result).
    Per-observation ranges (arrays) are used by ``"betting"`` only; the others take their hull.
    ``horizon`` (the planned n) sharpens the betting bound when n is fixed in advance.
    """
    check_method(method)
    _check_delta(delta)
    x = np.asarray(x, dtype=np.float64).ravel()
    if (np.ndim(lo) or np.ndim(hi)) and method not in ("betting",):
        lo, hi = float(np.min(lo)), float(np.max(hi))
    if method == "betting":
        if x.size == 0:
            return float(np.max(hi)) if side == "upper" else float(np.min(lo))
        return _betting_bound(x, lo, hi, delta, side, horizon)
    return _closed_form(x, float(lo), float(hi), delta, side, method)


def upper_bound(x: np.ndarray, lo: float, hi: float, delta: float, method: str = "betting") -> float:
    """Upper confidence bound on the mean (probability >= 1 - delta that mean <= bound)."""
    return mean_bound(x, lo, hi, delta, "upper", method)


def lower_bound(x: np.ndarray, lo: float, hi: float, delta: float, method: str = "betting") -> float:
    """Lower confidence bound on the mean (probability >= 1 - delta that mean >= bound)."""
    return mean_bound(x, lo, hi, delta, "lower", method)


def interval(
    x: np.ndarray, lo: float, hi: float, delta: float, method: str = "betting"
) -> tuple[float, float]:
    """Two-sided interval: each side at delta/2, so it covers the mean with probability >= 1 - delta."""
    return (
        mean_bound(x, lo, hi, delta / 2.0, "lower", method),
        mean_bound(x, lo, hi, delta / 2.0, "upper", method),
    )


def weighted_mean_bound(
    values: np.ndarray,
    weights: np.ndarray,
    max_weight: float,
    delta: float,
    side: Side,
    method: str = "betting",
) -> float:
    """Bound on E[w * v] for v in [0, 1] and importance weights 0 <= w <= max_weight.

    With draws from q and w = u/q this is a bound on the mean of v under u (e.g. a population
    mean when u is uniform). The known ``max_weight`` is the range that makes it finite-sample.
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if v.shape != w.shape:
        raise ValueError(f"values and weights differ in length: {v.shape} vs {w.shape}")
    if v.size and (v.min() < 0 or v.max() > 1):
        raise ValueError("values must lie in [0, 1]")
    if w.size and (w.min() < 0 or w.max() > max_weight * (1 + 1e-9)):
        raise ValueError("weights must lie in [0, max_weight]")
    return mean_bound(v * w, 0.0, float(max_weight), delta, side, method)


def weighted_mean_interval(
    values: np.ndarray, weights: np.ndarray, max_weight: float, delta: float, method: str = "betting"
) -> tuple[float, float]:
    """Two-sided version of :func:`weighted_mean_bound` (delta/2 per side)."""
    return (
        weighted_mean_bound(values, weights, max_weight, delta / 2.0, "lower", method),
        weighted_mean_bound(values, weights, max_weight, delta / 2.0, "upper", method),
    )


def mean_at_most(
    x: np.ndarray,
    lo: float,
    hi: float,
    threshold: np.ndarray | float,
    delta: np.ndarray | float,
    method: str = "betting",
) -> np.ndarray:
    """Test, for each row of ``x``, the null "mean > threshold"; True where it is rejected.

    A True means: with error probability at most ``delta`` (per row), mean <= threshold
    (approximately for ``"empirical"`` and ``"normal"``). Rows share the range [lo, hi] and the
    sample size (observations on the last axis).
    """
    check_method(method)
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    rows, n = x.shape
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (rows,))
    dl = np.broadcast_to(np.asarray(delta, dtype=np.float64), (rows,))
    if n == 0:
        return thr >= hi
    if method == "betting":
        out = np.empty(rows, dtype=bool)
        for d in np.unique(dl):
            sel = dl == d
            w = betting_log_wealth(x[sel], lo, hi, thr[sel][:, None], float(d), "upper", horizon=n)
            out[sel] = w >= np.log(1.0 / d)
        return out | (thr >= hi)
    mean = x.mean(axis=1)
    width = hi - lo
    if method == "hoeffding":
        ub = mean + width * np.sqrt(np.log(1.0 / dl) / (2.0 * n))
    elif method == "bernstein":
        if n < 2:
            return thr >= hi
        var = (((x - lo) / width) ** 2).mean(axis=1) - ((mean - lo) / width) ** 2
        var = np.maximum(var * n / (n - 1), 0.0)
        log_term = np.log(2.0 / dl)
        ub = mean + width * (np.sqrt(2.0 * var * log_term / n) + 7.0 * log_term / (3.0 * (n - 1)))
    elif method == "empirical":
        if n < 2:
            return thr >= hi
        ub = mean + empirical_bernstein_radius(x, dl)
    else:
        if n < 2:
            return thr >= hi
        sd = x.std(axis=1, ddof=1)
        ub = mean + stats.norm.ppf(1.0 - dl) * sd / np.sqrt(n)
    return np.minimum(ub, hi) <= thr


def clopper_pearson_upper(k: int, n: int, delta: float) -> float:
    """Exact upper bound on a binomial proportion after k successes in n trials."""
    _check_delta(delta)
    if k >= n:
        return 1.0
    return float(stats.beta.ppf(1.0 - delta, k + 1, n - k))


def hypergeom_count_upper(k: int, n: int, population: int, delta: float) -> int:
    """Exact upper bound on the number D of marked items in a population of size ``population``,
    after seeing ``k`` marked ones in a simple random sample (without replacement) of ``n``.

    Returns the largest D with P(X <= k | D) > delta; P(true D > bound) <= delta.
    """
    _check_delta(delta)
    lo, hi = k, population - (n - k)  # D must explain the sample
    if stats.hypergeom.cdf(k, population, hi, n) > delta:
        return int(hi)
    while hi - lo > 1:  # invariant: cdf(lo) > delta >= cdf(hi); cdf is decreasing in D
        mid = (lo + hi) // 2
        if stats.hypergeom.cdf(k, population, mid, n) > delta:
            lo = mid
        else:
            hi = mid
    return int(lo)
