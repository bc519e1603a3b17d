"""Coverage of the confidence bounds by repeated trials on known distributions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sampling import bounds

from .conftest import success_floor

DELTA = 0.05
TRIALS = 400
N = 200


def _draw(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    if kind == "rare-bernoulli":
        return (rng.random(N) < 0.03).astype(float), 0.03
    if kind == "skewed-beta":
        return rng.beta(0.3, 6.0, N), 0.3 / 6.3
    return rng.random(N), 0.5


@pytest.mark.parametrize("method", ["betting", "bernstein", "hoeffding", "empirical"])
@pytest.mark.parametrize("kind", ["rare-bernoulli", "skewed-beta", "uniform"])
def test_one_sided_bounds_cover(method: str, kind: str) -> None:
    """Each side misses at most δ of the time (with a binomial tolerance over 400 trials)."""
    rng = np.random.default_rng(11)
    miss_up = miss_lo = 0
    for _ in range(TRIALS):
        x, mu = _draw(kind, rng)
        miss_up += mu > bounds.upper_bound(x, 0.0, 1.0, DELTA, method)
        miss_lo += mu < bounds.lower_bound(x, 0.0, 1.0, DELTA, method)
    allowed = 1.0 - success_floor(1.0 - DELTA, TRIALS)
    assert miss_up / TRIALS <= allowed
    assert miss_lo / TRIALS <= allowed


def test_normal_bound_undercovers_on_rare_events() -> None:
    """The CLT bound (SUPG's) misses far more than δ on rare events at n=200; betting does not."""
    rng = np.random.default_rng(3)
    miss = {"normal": 0, "betting": 0}
    for _ in range(TRIALS):
        x = (rng.random(N) < 0.01).astype(float)
        for m in miss:
            miss[m] += bounds.upper_bound(x, 0.0, 1.0, DELTA, m) < 0.01
    assert miss["normal"] / TRIALS > 0.10
    assert miss["betting"] / TRIALS <= DELTA


def test_betting_is_tighter_than_bernstein_and_hoeffding() -> None:
    rng = np.random.default_rng(5)
    x = rng.beta(0.5, 5.0, 500)
    width = {m: np.subtract(*bounds.interval(x, 0, 1, DELTA, m)[::-1]) for m in bounds.FINITE_SAMPLE_METHODS}
    assert width["betting"] < width["bernstein"] < width["hoeffding"]


def test_two_sided_interval_covers() -> None:
    rng = np.random.default_rng(8)
    hits = 0
    for _ in range(TRIALS):
        x = rng.beta(2.0, 5.0, 100)
        lo, hi = bounds.interval(x, 0.0, 1.0, DELTA, "betting")
        hits += lo <= 2.0 / 7.0 <= hi
    assert hits / TRIALS >= success_floor(1.0 - DELTA, TRIALS)


def test_importance_weighted_bound_covers_population_mean() -> None:
    """Draws from q with weights u/q <= max_weight: the bound covers the population mean of v."""
    rng = np.random.default_rng(21)
    pop = 5000
    score = rng.beta(0.2, 2.0, pop)
    v = (rng.random(pop) < score).astype(float)
    q = 0.8 * np.sqrt(score) / np.sqrt(score).sum() + 0.2 / pop
    weight = (1.0 / pop) / q
    truth = v.mean()
    miss = 0
    for _ in range(TRIALS):
        i = rng.choice(pop, size=300, p=q)
        miss += truth > bounds.weighted_mean_bound(v[i], weight[i], weight.max(), DELTA, "upper")
    assert miss / TRIALS <= 1.0 - success_floor(1.0 - DELTA, TRIALS)


def test_weighted_bound_rejects_weights_above_the_stated_maximum() -> None:
    with pytest.raises(ValueError, match="max_weight"):
        bounds.weighted_mean_bound(np.ones(3), np.array([1.0, 2.0, 9.0]), 5.0, DELTA, "upper")


def test_betting_confidence_sequence_is_anytime_valid() -> None:
    """Stopping as soon as the interval is narrow (data-dependent stopping) keeps coverage."""
    rng = np.random.default_rng(13)
    miss = 0
    trials = 150
    for _ in range(trials):
        x = (rng.random(1000) < 0.2).astype(float)
        n = 100
        while True:
            lo, hi = bounds.interval(x[:n], 0.0, 1.0, DELTA, "betting")
            if hi - lo < 0.12 or n >= x.size:
                break
            n += 150
        miss += not lo <= 0.2 <= hi
    assert miss / trials <= 1.0 - success_floor(1.0 - DELTA, trials)


def test_mean_at_most_matches_upper_bound() -> None:
    rng = np.random.default_rng(2)
    x = rng.beta(1.0, 4.0, (6, 300))
    for method in bounds.METHODS:
        ub = np.array([bounds.mean_bound(row, 0, 1, DELTA, "upper", method, horizon=300) for row in x])
        assert np.array_equal(bounds.mean_at_most(x, 0.0, 1.0, ub + 1e-3, DELTA, method), np.ones(6, bool))
        assert not bounds.mean_at_most(x, 0.0, 1.0, x.mean(axis=1) - 1e-3, DELTA, method).any()


def test_exact_bounds_match_their_definitions() -> None:
    # Clopper-Pearson: P(Bin(n, ub) <= k) = delta at the bound
    ub = bounds.clopper_pearson_upper(3, 50, DELTA)
    assert stats.binom.cdf(3, 50, ub) == pytest.approx(DELTA, rel=1e-6)
    # hypergeometric: the bound is the largest D not rejected
    d = bounds.hypergeom_count_upper(2, 40, 400, DELTA)
    assert stats.hypergeom.cdf(2, 400, d, 40) > DELTA >= stats.hypergeom.cdf(2, 400, d + 1, 40)


def test_unknown_method_and_bad_delta_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown bound method"):
        bounds.upper_bound(np.ones(3), 0, 1, DELTA, "magic")
    with pytest.raises(ValueError, match="delta"):
        bounds.upper_bound(np.ones(3), 0, 1, 1.5)
