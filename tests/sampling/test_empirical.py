"""The "empirical" bound (empirical Bernstein with the observed range): the bound itself, and the
operators with it by repeated seeded trials at budget 1000 and δ = 5%.

"empirical" has no finite-sample guarantee, so these tests check what it does in practice: the
success count of each guarantee over the trials must reach the 0.1% quantile of
Binomial(trials, 1 - δ) (what a method succeeding exactly 95% of the time would fall below once in
a thousand seed sets), and the answer must be useful (far better than returning every row, which
is all a finite-sample method can do for these rare positives at this budget).

Data: the real SUPG ImageNet file (skipped when absent) and SUPG's Beta(0.01, 2) generator at the
full N = 10^6 (the operators take a few ms per trial there, so no smaller N is needed).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sampling import (
    FINITE_SAMPLE_METHODS,
    METHODS,
    bounds,
    estimate_aggregate,
    rank_proxy,
    select_cascade,
    select_precision_target,
    select_recall_target,
)
from sampling.recall import DEFAULT_MIX

from .conftest import DELTA, Labelled, needs_imagenet

CONF = 1.0 - DELTA
TRIALS = 100


def min_successes(trials: int, rate: float = CONF) -> int:
    """0.1% quantile of Binomial(trials, rate): the success count we require."""
    return int(stats.binom.ppf(0.001, trials, rate))


def run_trials(data: Labelled, op, trials: int = TRIALS, **kw) -> dict[str, np.ndarray]:
    out: dict[str, list] = {k: [] for k in ("recall", "precision", "met", "hint", "size", "finite")}
    for seed in range(trials):
        res = op(data.ranked, data.oracle, rng=np.random.default_rng(seed), confidence=CONF, **kw)
        assert res.oracle_calls <= kw["budget"]
        out["recall"].append(data.recall(res.indices))
        out["precision"].append(data.precision(res.indices))
        out["met"].append(res.target_met)
        out["hint"].append(res.budget_hint is not None)
        out["size"].append(res.indices.size)
        out["finite"].append(res.finite_sample)
    return {k: np.asarray(v) for k, v in out.items()}


# ---------------------------------------------------------------- the bound


def test_empirical_is_listed_but_not_finite_sample() -> None:
    assert "empirical" in METHODS
    assert "empirical" not in FINITE_SAMPLE_METHODS


@pytest.mark.parametrize("kind", ["skewed-beta", "rare-bernoulli", "weighted-rare"])
def test_empirical_bound_covers_skewed_data(kind: str) -> None:
    """One-sided coverage >= 1 - δ (binomial 0.1% tolerance over 400 trials) on skewed data,
    including importance-weighted rare events whose observed range is far below the known one."""
    rng = np.random.default_rng(31)
    trials, n = 400, 300
    pop_score = rng.beta(0.2, 4.0, 20_000)
    pop_v = (rng.random(pop_score.size) < pop_score).astype(float)
    q = 0.9 * np.sqrt(pop_score) / np.sqrt(pop_score).sum() + 0.1 / pop_score.size
    weight = (1.0 / pop_score.size) / q
    cover_up = cover_lo = 0
    for _ in range(trials):
        if kind == "skewed-beta":
            x, mu, hi = rng.beta(0.3, 6.0, n), 0.3 / 6.3, 1.0
        elif kind == "rare-bernoulli":
            x, mu, hi = (rng.random(n) < 0.03).astype(float), 0.03, 1.0
        else:
            i = rng.choice(pop_score.size, size=n, p=q)
            x, mu, hi = pop_v[i] * weight[i], pop_v.mean(), float(weight.max())
        cover_up += mu <= bounds.mean_bound(x, 0.0, hi, DELTA, "upper", "empirical")
        cover_lo += mu >= bounds.mean_bound(x, 0.0, hi, DELTA, "lower", "empirical")
    assert cover_up >= min_successes(trials) and cover_lo >= min_successes(trials)


def test_empirical_matches_its_formula_and_bernstein_when_the_range_is_seen() -> None:
    rng = np.random.default_rng(4)
    x = rng.beta(0.5, 3.0, 250)
    log_term = np.log(2.0 / DELTA)
    rad = np.sqrt(2 * x.var(ddof=1) * log_term / x.size) + 7 * np.ptp(x) * log_term / (3 * (x.size - 1))
    assert bounds.upper_bound(x, 0, 1, DELTA, "empirical") == pytest.approx(min(x.mean() + rad, 1.0))
    assert bounds.lower_bound(x, 0, 1, DELTA, "empirical") == pytest.approx(max(x.mean() - rad, 0.0))
    # an observed range equal to the known one gives exactly the (finite-sample) Bernstein bound
    y = np.concatenate([[0.0, 1.0], x])
    assert bounds.upper_bound(y, 0, 1, DELTA, "empirical") == pytest.approx(
        bounds.upper_bound(y, 0, 1, DELTA, "bernstein")
    )
    # a small observed range inside a wide known range: much tighter than Bernstein
    z = 0.01 * x
    assert bounds.upper_bound(z, 0, 1, DELTA, "empirical") < z.mean() + 0.1 * (
        bounds.upper_bound(z, 0, 1, DELTA, "bernstein") - z.mean()
    )


def test_empirical_with_observed_range_zero() -> None:
    """Every observation equal: radius 0, the bound is that value (on both sides, and in the
    vectorised test); fewer than two observations: the trivial bound (the known range)."""
    const = np.full(50, 0.25)
    assert bounds.upper_bound(const, 0, 1, DELTA, "empirical") == 0.25
    assert bounds.lower_bound(const, 0, 1, DELTA, "empirical") == 0.25
    assert bounds.interval(np.zeros(50), 0, 1, DELTA, "empirical") == (0.0, 0.0)
    rows = np.stack([const, np.zeros(50)])
    assert bounds.mean_at_most(rows, 0.0, 1.0, 0.25, DELTA, "empirical").tolist() == [True, True]
    assert bounds.mean_at_most(rows, 0.0, 1.0, -1e-9, DELTA, "empirical").tolist() == [False, False]
    assert bounds.upper_bound(np.array([0.3]), 0, 1, DELTA, "empirical") == 1.0
    assert bounds.lower_bound(np.array([0.3]), 0, 1, DELTA, "empirical") == 0.0
    assert not bounds.mean_at_most(np.array([[0.3]]), 0.0, 1.0, 0.5, DELTA, "empirical")[0]


def test_empirical_is_not_valid_for_rare_events_the_sample_missed() -> None:
    """Why it is not finite-sample: at rate 0.5% and n = 200 a third of the samples hold no event,
    and the empirical bound (range 0) then claims mean <= 0. Betting stays valid."""
    rng = np.random.default_rng(9)
    trials = 200
    miss = {"empirical": 0, "betting": 0}
    for _ in range(trials):
        x = (rng.random(200) < 0.005).astype(float)
        for m in miss:
            miss[m] += bounds.upper_bound(x, 0.0, 1.0, DELTA, m) < 0.005
    assert miss["empirical"] / trials > 0.25
    assert miss["betting"] / trials <= DELTA


# ---------------------------------------------------------------- defaults


def test_mix_none_takes_the_bounds_default(small_synthetic: Labelled) -> None:
    d = small_synthetic
    for bound, op in [("empirical", select_recall_target), ("betting", select_recall_target)]:
        res = op(d.ranked, d.oracle, target=0.9, budget=300, rng=np.random.default_rng(0), bound=bound)
        assert res.details["mix"] == DEFAULT_MIX[bound]
    assert DEFAULT_MIX["empirical"] == 0.1 and DEFAULT_MIX["betting"] == 0.5
    kw = {"recall_target": 0.9, "precision_target": 0.9, "budget": 300}
    res = select_cascade(d.ranked, d.oracle, rng=np.random.default_rng(0), bound="empirical", **kw)
    assert res.details["mix"] == DEFAULT_MIX["empirical"]
    res = select_recall_target(
        d.ranked, d.oracle, target=0.9, budget=300, rng=np.random.default_rng(0), bound="empirical", mix=0.3
    )
    assert res.details["mix"] == 0.3
    with pytest.raises(ValueError, match="unknown bound method"):
        select_recall_target(
            d.ranked, d.oracle, target=0.9, budget=300, rng=np.random.default_rng(0), bound="x", mix=0.3
        )


@pytest.fixture(scope="module")
def small_synthetic() -> Labelled:
    rng = np.random.default_rng(2)
    proxy = rng.beta(0.05, 1.0, 20_000)
    return Labelled("small", proxy, (rng.random(proxy.size) < proxy).astype(np.int64), rank_proxy(proxy))


# ---------------------------------------------------------------- recall target


@needs_imagenet
def test_recall_target_empirical_imagenet(imagenet: Labelled) -> None:
    """SUPG's reference precision 0.79 (CLT) is reached with empirical Bernstein; finite-sample
    methods return every row here (precision 0.001)."""
    r = run_trials(imagenet, select_recall_target, target=0.9, budget=1000, bound="empirical")
    assert np.count_nonzero(r["recall"] >= 0.9) >= min_successes(TRIALS)
    assert r["precision"].mean() > 0.5
    assert not r["finite"].any()


def test_recall_target_empirical_beta(beta_synthetic: Labelled) -> None:
    """N = 10^6, 0.5% positives: a real threshold (precision ~0.15, against 0.005 for every row);
    a result that returns every row says so (budget_hint), and only such a result does."""
    r = run_trials(beta_synthetic, select_recall_target, target=0.9, budget=1000, bound="empirical")
    assert np.count_nonzero(r["recall"] >= 0.9) >= min_successes(TRIALS)
    base_rate = beta_synthetic.positives / beta_synthetic.labels.size
    assert r["precision"].mean() > 20 * base_rate
    assert r["met"].all() and not r["finite"].any()
    everything = r["size"] >= beta_synthetic.labels.size - 1000
    assert np.array_equal(r["hint"], everything)
    assert r["hint"].mean() <= 0.1


# ---------------------------------------------------------------- precision target


@pytest.mark.parametrize(
    "dataset", [pytest.param("imagenet", marks=needs_imagenet), "beta_synthetic", "wide_synthetic"]
)
def test_precision_target_empirical(dataset: str, request: pytest.FixtureRequest) -> None:
    """PT's one test is the exact hypergeometric one, so "empirical" runs the betting procedure
    (identical answers) and the result is finite-sample."""
    data: Labelled = request.getfixturevalue(dataset)
    r = run_trials(data, select_precision_target, target=0.95, budget=1000, bound="empirical")
    assert np.count_nonzero(r["precision"] >= 0.95) >= min_successes(TRIALS)
    assert r["finite"].all()
    assert r["recall"].mean() >= {"imagenet": 0.95, "beta_synthetic": 0.10, "wide_synthetic": 0.25}[dataset]
    for seed in range(3):
        a, b = (
            select_precision_target(
                data.ranked, data.oracle, target=0.95, budget=1000, rng=np.random.default_rng(seed), bound=m
            )
            for m in ("empirical", "betting")
        )
        assert np.array_equal(a.indices, b.indices)


# ---------------------------------------------------------------- cascade


@needs_imagenet
def test_cascade_empirical_imagenet(imagenet: Labelled) -> None:
    """Most results cover the band (budget 1000); both targets hold in >= 95% of all trials."""
    r = run_trials(
        imagenet, select_cascade, recall_target=0.9, precision_target=0.9, budget=1000, bound="empirical"
    )
    ok = (r["recall"] >= 0.9) & (r["precision"] >= 0.9)
    assert np.count_nonzero(ok) >= min_successes(TRIALS)
    assert r["met"].mean() >= 0.7
    assert np.array_equal(~r["met"], r["hint"])
    assert r["precision"].mean() > 0.9 and not r["finite"].any()


def test_cascade_empirical_beta_flags_the_band(beta_synthetic: Labelled) -> None:
    """~5,000 positives spread thinly: no method can label the band at budget 1000. The result
    says so, and the precision claim (δ/2) still holds for what is returned."""
    r = run_trials(
        beta_synthetic,
        select_cascade,
        recall_target=0.9,
        precision_target=0.9,
        budget=1000,
        bound="empirical",
    )
    assert not r["met"].any() and r["hint"].all()
    assert np.count_nonzero(r["precision"] >= 0.9) >= min_successes(TRIALS, 1 - DELTA / 2)


# ---------------------------------------------------------------- aggregates


def test_aggregate_empirical_uses_the_betting_interval() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    proxy = rng.beta(0.5, 2.0, n)
    match = rng.random(n) < proxy
    values = rng.gamma(2.0, 3.0, n).clip(0, 50)
    out = {}
    for bound in ("empirical", "betting"):
        out[bound] = estimate_aggregate(
            n,
            lambda i: (match[i], values[i]),
            agg="sum",
            error_target=0.1,
            budget=6000,
            rng=np.random.default_rng(1),
            proxy=proxy,
            value_bounds=(0.0, 50.0),
            bound=bound,
        )
    e, b = out["empirical"], out["betting"]
    assert (e.estimate, e.ci_low, e.ci_high, e.oracle_calls) == (
        b.estimate,
        b.ci_low,
        b.ci_high,
        b.oracle_calls,
    )
    assert e.bound == "empirical" and e.finite_sample and e.details["interval"] == "betting"
