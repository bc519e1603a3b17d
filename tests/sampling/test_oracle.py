"""BudgetedOracle: distinct-row budget, caching, and the operators never exceeding it."""

from __future__ import annotations

import numpy as np
import pytest

from sampling import (
    BudgetedOracle,
    BudgetExceededError,
    estimate_aggregate,
    limit_search,
    select_cascade,
    select_precision_target,
    select_recall_target,
    train_proxy,
)


class Recorder:
    """Oracle that records every index it is asked about."""

    def __init__(self, labels: np.ndarray, values: np.ndarray | None = None) -> None:
        self.labels = labels
        self.values = values
        self.asked: list[int] = []

    def __call__(self, idx: np.ndarray):
        self.asked.extend(np.asarray(idx).tolist())
        if self.values is None:
            return self.labels[idx]
        return self.labels[idx].astype(bool), self.values[idx]

    @property
    def distinct(self) -> int:
        return len(set(self.asked))


def test_counts_distinct_rows_and_caches() -> None:
    rec = Recorder(np.arange(10) % 2)
    bo = BudgetedOracle(rec, budget=5)
    assert bo([1, 2, 2, 3]).tolist() == [1, 0, 0, 1]
    assert bo.calls == 3
    assert bo([3, 1]).tolist() == [1, 1]  # cached: free, the oracle is not asked again
    assert bo.calls == 3 and len(rec.asked) == 3
    assert bo.remaining == 2
    assert bo.labelled_indices().tolist() == [1, 2, 3]


def test_raises_before_exceeding_the_budget() -> None:
    rec = Recorder(np.zeros(10, dtype=int))
    bo = BudgetedOracle(rec, budget=3)
    bo([0, 1])
    with pytest.raises(BudgetExceededError):
        bo([2, 3])
    assert rec.distinct == 2  # the oracle was not called with the over-budget batch
    assert bo([2]).tolist() == [0]
    assert bo.calls == 3


def test_tuple_answers_are_cached_componentwise() -> None:
    bo = BudgetedOracle(lambda i: (i % 2 == 0, i * 1.5, np.array(["a", "b"])[i % 2]), budget=10)
    m, v, g = bo(np.array([4, 3]))
    assert m.tolist() == [True, False] and v.tolist() == [6.0, 4.5] and g.tolist() == ["a", "b"]
    m, v, g = bo(np.array([3]))
    assert v.tolist() == [4.5]


def test_rejects_wrong_answer_length_and_bad_budget() -> None:
    with pytest.raises(ValueError, match="answers"):
        BudgetedOracle(lambda i: np.zeros(1), budget=5)(np.array([1, 2]))
    with pytest.raises(ValueError, match="budget"):
        BudgetedOracle(lambda i: i, budget=0)


@pytest.mark.parametrize("budget", [1, 7, 150, 400])
def test_operators_never_exceed_the_budget(budget: int) -> None:
    rng = np.random.default_rng(budget)
    n = 3000
    proxy = rng.beta(0.3, 1.0, n)
    labels = (rng.random(n) < proxy).astype(int)
    values = rng.uniform(0, 5, n)
    runs = {
        "recall": lambda o: select_recall_target(proxy, o, target=0.9, budget=budget, rng=rng),
        "precision": lambda o: select_precision_target(proxy, o, target=0.9, budget=budget, rng=rng),
        "cascade": lambda o: select_cascade(
            proxy, o, recall_target=0.9, precision_target=0.9, budget=budget, rng=rng
        ),
        "limit": lambda o: limit_search(proxy, o, k=50, budget=budget, rng=rng),
    }
    for name, run in runs.items():
        rec = Recorder(labels)
        res = run(rec)
        assert rec.distinct <= budget, name
        assert res.oracle_calls == rec.distinct, name
    for agg in ("count", "sum", "avg"):
        rec = Recorder(labels, values)
        res = estimate_aggregate(
            n, rec, agg=agg, error_target=0.01, budget=budget, rng=rng, proxy=proxy, value_bounds=(0, 5)
        )
        assert rec.distinct <= budget and res.oracle_calls == rec.distinct


def test_auto_proxy_and_operator_share_one_budget() -> None:
    rng = np.random.default_rng(4)
    n = 5000
    feats = rng.normal(size=(n, 3))
    labels = (feats[:, 0] + 0.3 * rng.normal(size=n) > 1.2).astype(int)
    rec = Recorder(labels)
    proxy, bo = train_proxy(feats, rec, budget=600, rng=rng, train_fraction=0.25)
    assert proxy.oracle_calls == 150 and bo.calls == 150
    res = select_precision_target(proxy.scores, bo, target=0.9, budget=600, rng=rng)
    assert rec.distinct <= 600
    assert res.oracle_calls == rec.distinct
