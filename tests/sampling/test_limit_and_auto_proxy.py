"""LIMIT search by proxy order, and the automatic proxy."""

from __future__ import annotations

import numpy as np
import pytest

from sampling import (
    BudgetedOracle,
    fit_logistic,
    limit_search,
    predict_logistic,
    select_precision_target,
    select_recall_target,
    train_proxy,
)

from .conftest import DELTA, Labelled, needs_imagenet, success_floor


@needs_imagenet
def test_limit_returns_k_true_positives_on_imagenet(imagenet: Labelled) -> None:
    res = limit_search(imagenet.proxy, imagenet.oracle, k=45, rng=np.random.default_rng(0), batch_size=16)
    assert res.found == 45 and not res.exhausted
    assert res.indices.size == 45 and np.unique(res.indices).size == 45
    assert imagenet.labels[res.indices].all()
    # 45 of the 50 positives sit in the top 47 proxy ranks: a few batches suffice
    assert res.oracle_calls <= 64


def test_limit_follows_proxy_order_and_stops_early() -> None:
    rng = np.random.default_rng(1)
    proxy = rng.random(10_000)
    labels = (rng.random(proxy.size) < proxy**3).astype(int)
    res = limit_search(proxy, lambda i: labels[i], k=20, rng=rng, batch_size=10)
    assert labels[res.indices].all() and res.found == 20
    # the returned rows are the first positives in descending proxy order
    order = np.argsort(-proxy, kind="stable")
    first = order[labels[order] == 1][:20]
    assert set(res.indices.tolist()) == set(first.tolist())
    assert res.oracle_calls % 10 == 0 and res.oracle_calls < 100


def test_limit_reports_exhaustion() -> None:
    proxy = np.linspace(1, 0, 100)
    labels = np.zeros(100, dtype=int)
    labels[[3, 50]] = 1
    res = limit_search(proxy, lambda i: labels[i], k=5, rng=np.random.default_rng(0))
    assert res.found == 2 and res.exhausted and res.oracle_calls == 100
    assert sorted(res.indices.tolist()) == [3, 50]
    res = limit_search(proxy, lambda i: labels[i], k=5, rng=np.random.default_rng(0), budget=20, batch_size=8)
    assert res.found == 1 and res.exhausted and res.oracle_calls == 20
    assert res.budget_hint and "budget" in res.budget_hint


def test_limit_reuses_labels_already_paid_for() -> None:
    proxy = np.linspace(1, 0, 50)
    labels = (np.arange(50) % 5 == 0).astype(int)
    bo = BudgetedOracle(lambda i: labels[i], budget=30)
    bo(np.arange(20))
    res = limit_search(proxy, bo, k=6, rng=np.random.default_rng(0), batch_size=4)
    assert res.found == 6 and bo.calls == 28  # 20 cached + 8 new
    assert labels[res.indices].all()


def test_logistic_regression_recovers_a_linear_rule() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, 3))
    logit = 2.0 * x[:, 0] - 1.0 * x[:, 2] + 0.5
    y = (rng.random(4000) < 1 / (1 + np.exp(-logit))).astype(int)
    coef, intercept, mean, scale = fit_logistic(x, y, l2=0.1)
    assert coef[0] / scale[0] == pytest.approx(2.0, rel=0.2)  # raw-feature coefficient
    assert abs(coef[1]) < 0.2
    p = predict_logistic(x, coef, intercept, mean, scale)
    assert np.corrcoef(p, 1 / (1 + np.exp(-logit)))[0, 1] > 0.95


def _feature_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 30_000
    x = rng.normal(size=(n, 4))
    labels = (x[:, 0] + 0.5 * x[:, 1] + 0.4 * rng.normal(size=n) > 2.0).astype(int)
    return x, labels


def test_auto_proxy_spends_its_fraction_and_ranks_well() -> None:
    x, labels = _feature_data(0)
    proxy, bo = train_proxy(
        x, lambda i: labels[i], budget=1000, rng=np.random.default_rng(0), train_fraction=0.2
    )
    assert proxy.oracle_calls == 200 == bo.calls and proxy.train_indices.size == 200
    assert np.array_equal(proxy.train_labels, labels[proxy.train_indices])
    # a good ranking: positives score far higher than negatives
    pos, neg = proxy.scores[labels == 1], proxy.scores[labels == 0]
    auc = (pos[:, None] > neg[None, :2000]).mean()
    assert auc > 0.95


def test_auto_proxy_guarantees_hold_on_fresh_samples() -> None:
    """Proxy trained on 20% of the budget, guarantee from the remaining 80% (same oracle)."""
    x, labels = _feature_data(1)
    data_pos = labels.sum()
    trials = 40
    ok_pt = ok_rt = 0
    rt_precision, pt_recall = [], []
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        proxy, bo = train_proxy(x, lambda i: labels[i], budget=3000, rng=rng, train_fraction=0.2)
        res = select_precision_target(proxy.scores, bo, target=0.9, budget=3000, rng=rng)
        assert res.oracle_calls <= 3000
        ok_pt += res.indices.size == 0 or labels[res.indices].mean() >= 0.9
        pt_recall.append(labels[res.indices].sum() / data_pos)
        proxy, bo = train_proxy(x, lambda i: labels[i], budget=3000, rng=rng, train_fraction=0.2)
        res = select_recall_target(proxy.scores, bo, target=0.8, budget=3000, rng=rng)
        ok_rt += labels[res.indices].sum() / data_pos >= 0.8
        rt_precision.append(labels[res.indices].mean())
    assert ok_pt / trials >= success_floor(1 - DELTA, trials)
    assert ok_rt / trials >= success_floor(1 - DELTA, trials)
    # and the answers are useful (base rate of positives: 4.4%)
    assert np.mean(rt_precision) >= 0.4
    assert np.mean(pt_recall) >= 0.5


def test_constant_labels_give_a_constant_proxy() -> None:
    x = np.random.default_rng(0).normal(size=(500, 2))
    proxy, _ = train_proxy(x, lambda i: np.zeros(len(i), int), budget=50, rng=np.random.default_rng(0))
    assert np.all(proxy.scores == 0.0)
