"""Guarantee checks by repeated seeded trials: RT 90%, PT 95%, cascade RT 90% + PT 90%.

Each check runs TRIALS (100) trials at budget 1000 and δ = 5% on the real SUPG ImageNet data
(skipped when the file is absent) and on SUPG's synthetic Beta(0.01, 2) generator (N = 10^6).
Success must be >= 0.95 - 2·sqrt(0.95·0.05/100) = 0.906 (a binomial tolerance of two standard
errors at the nominal rate).

Reference figures from the SUPG authors' code (CLT bounds) on ImageNet at budget 1000: RT 90%
precision 0.79; PT 95% recall 0.97. Our finite-sample recall-target method cannot approach 0.79
there (no finite-sample method can: see test_recall_target_imagenet_finite_sample); the tests
assert what it reaches and check that our asymptotic mode ("normal") matches the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from sampling import rank_proxy, select_cascade, select_precision_target, select_recall_target

from .conftest import DELTA, TRIALS, Labelled, needs_imagenet, success_floor

CONF = 1.0 - DELTA
FLOOR = success_floor(CONF, TRIALS)


def run_trials(data: Labelled, op, trials: int = TRIALS, **kw) -> dict[str, np.ndarray]:
    out: dict[str, list] = {"recall": [], "precision": [], "calls": [], "met": [], "hint": [], "size": []}
    for seed in range(trials):
        res = op(data.ranked, data.oracle, rng=np.random.default_rng(seed), confidence=CONF, **kw)
        assert res.oracle_calls <= kw["budget"]
        out["recall"].append(data.recall(res.indices))
        out["precision"].append(data.precision(res.indices))
        out["calls"].append(res.oracle_calls)
        out["met"].append(res.target_met)
        out["hint"].append(res.budget_hint is not None)
        out["size"].append(res.indices.size)
    return {k: np.asarray(v) for k, v in out.items()}


# ---------------------------------------------------------------- recall target (SUPG IS-RT)


@needs_imagenet
def test_recall_target_imagenet_finite_sample(imagenet: Labelled) -> None:
    """Finite-sample RT 90% holds, but at budget 1000 it must return (almost) every row.

    Why no valid method can do better here: ImageNet has 50 positives in 50,000 rows, so recall
    90% tolerates 5 misses. Six extra positives planted among low-proxy rows would be labelled
    by 1000 oracle calls with probability < 12%, yet would break recall of any small answer, so
    any method valid on every dataset must return a large part of the table. SUPG's 0.79 comes
    from its CLT bound, which is not valid at this sample size.
    """
    r = run_trials(imagenet, select_recall_target, target=0.9, budget=1000)
    assert np.mean(r["recall"] >= 0.9) >= FLOOR
    base_rate = imagenet.positives / imagenet.labels.size
    assert r["precision"].mean() == pytest.approx(base_rate, rel=0.1)  # the gap to 0.79, stated
    assert r["hint"].all()  # and the result says so


@needs_imagenet
def test_recall_target_imagenet_asymptotic_mode_matches_supg_reference(imagenet: Labelled) -> None:
    """With SUPG's CLT bound and mixing (0.9 sqrt-proxy / 0.1 uniform) we match its figure."""
    r = run_trials(imagenet, select_recall_target, target=0.9, budget=1000, bound="normal", mix=0.1)
    assert np.mean(r["recall"] >= 0.9) >= FLOOR
    assert r["precision"].mean() >= 0.79 - 0.05


def test_recall_target_beta_finite_sample(beta_synthetic: Labelled) -> None:
    r = run_trials(beta_synthetic, select_recall_target, target=0.9, budget=1000)
    assert np.mean(r["recall"] >= 0.9) >= FLOOR
    # ~5,000 positives in 10^6 rows: 1000 labels cannot certify a threshold either
    assert r["precision"].mean() == pytest.approx(beta_synthetic.positives / 1e6, rel=0.1)
    assert r["hint"].all()


def test_recall_target_finite_sample_is_useful_with_enough_positives() -> None:
    """4.7% positives, budget 3% of N: a real threshold, precision near the best possible."""
    rng = np.random.default_rng(1)
    proxy = rng.beta(0.05, 1.0, 100_000)
    labels = rng.random(proxy.size) < proxy
    data = Labelled("beta-0.05-1", proxy, labels.astype(np.int64), rank_proxy(proxy))
    r = run_trials(data, select_recall_target, trials=50, target=0.9, budget=3000)
    assert np.mean(r["recall"] >= 0.9) >= success_floor(CONF, 50)
    order = data.ranked.order
    best = 0.9 * data.positives / (np.searchsorted(np.cumsum(data.labels[order]), 0.9 * data.positives) + 1)
    assert r["precision"].mean() >= 0.75 * best  # best = precision of the true 90%-recall threshold
    assert not r["hint"].any()


# ---------------------------------------------------------------- precision target (IS-PT)


@needs_imagenet
def test_precision_target_imagenet(imagenet: Labelled) -> None:
    r = run_trials(imagenet, select_precision_target, target=0.95, budget=1000)
    assert np.mean(r["precision"] >= 0.95) >= FLOOR
    assert r["recall"].mean() >= 0.97 - 0.02  # SUPG reference recall 0.97


def test_precision_target_beta(beta_synthetic: Labelled) -> None:
    r = run_trials(beta_synthetic, select_precision_target, target=0.95, budget=1000)
    assert np.mean(r["precision"] >= 0.95) >= FLOOR
    # precision >= 0.95 needs proxy ~ 0.9+: a few hundred rows; labelling the top rows does better
    assert r["recall"].mean() >= 0.10


def test_precision_target_with_sampled_threshold(wide_synthetic: Labelled) -> None:
    """Tens of thousands of high-precision rows: the stage-2 tests certify a proxy threshold."""
    r = run_trials(wide_synthetic, select_precision_target, target=0.95, budget=1000)
    assert np.mean(r["precision"] >= 0.95) >= FLOOR
    assert r["recall"].mean() >= 0.25
    assert np.median(r["size"]) > 10_000  # far more rows than were labelled


@pytest.fixture(scope="module")
def separated_top() -> Labelled:
    """A dense, well-separated top: 10% positives, proxy Beta(20, 1.5) for positives and
    Beta(1, 30) for negatives, N = 20,000 (every positive outranks every negative here)."""
    rng = np.random.default_rng(1)
    labels = (rng.random(20_000) < 0.1).astype(np.int64)
    proxy = np.where(labels == 1, rng.beta(20, 1.5, labels.size), rng.beta(1, 30, labels.size))
    return Labelled("separated", proxy, labels, rank_proxy(proxy))


@pytest.mark.parametrize("target", [0.9, 0.95])
def test_precision_target_reaches_the_edge_of_a_separated_top(separated_top: Labelled, target: float) -> None:
    """BARGAIN's mean recall here is 0.9995 at either target (bench_bargain.py --datasets sep);
    coarse threshold steps stopped ours up to 7% of the positives short (mean 0.978)."""
    r = run_trials(separated_top, select_precision_target, target=target, budget=1000)
    assert np.mean(r["precision"] >= target) >= FLOOR
    assert r["recall"].mean() >= 0.9995
    assert r["recall"].min() >= 0.99


# ---------------------------------------------------------------- cascade


@pytest.mark.parametrize("dataset", [pytest.param("imagenet", marks=needs_imagenet), "beta_synthetic"])
def test_cascade_flags_an_uncoverable_band(dataset: str, request: pytest.FixtureRequest) -> None:
    """At budget 1000 the certified reject threshold is the bottom of the table, so the band
    cannot be labelled: the result says so (target_met False, hint with the budget needed),
    and the precision half of the guarantee (δ/2) still holds for what is returned."""
    data: Labelled = request.getfixturevalue(dataset)
    r = run_trials(data, select_cascade, recall_target=0.9, precision_target=0.9, budget=1000)
    assert not r["met"].any()
    assert r["hint"].all()
    assert np.mean(r["precision"] >= 0.9) >= success_floor(1 - DELTA / 2, TRIALS)


def test_cascade_meets_both_targets_when_the_band_fits() -> None:
    rng = np.random.default_rng(3)
    proxy = rng.beta(0.3, 0.3, 5000)
    labels = (rng.random(proxy.size) < proxy).astype(np.int64)
    data = Labelled("u-shaped", proxy, labels, rank_proxy(proxy))
    r = run_trials(data, select_cascade, recall_target=0.9, precision_target=0.9, budget=3000)
    assert r["met"].mean() >= 0.9
    ok = (r["recall"] >= 0.9) & (r["precision"] >= 0.9)
    assert ok[r["met"]].mean() >= FLOOR
    assert r["calls"].max() <= 3000
