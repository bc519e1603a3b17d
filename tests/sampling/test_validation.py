"""Bad arguments raise ValueError with a message naming the problem."""

from __future__ import annotations

import numpy as np
import pytest

from sampling import (
    estimate_aggregate,
    limit_search,
    select_cascade,
    select_precision_target,
    select_recall_target,
    train_proxy,
)

RNG = np.random.default_rng(0)
PROXY = np.linspace(0.0, 1.0, 50)


def oracle(idx: np.ndarray) -> np.ndarray:
    return (PROXY[idx] > 0.5).astype(int)


def rt(**kw):
    args = {"target": 0.9, "budget": 10, "rng": RNG, "confidence": 0.95} | kw
    proxy = args.pop("proxy", PROXY)
    return select_recall_target(proxy, oracle, **args)


def pt(**kw):
    args = {"target": 0.9, "budget": 10, "rng": RNG, "confidence": 0.95} | kw
    proxy = args.pop("proxy", PROXY)
    return select_precision_target(proxy, oracle, **args)


def cascade(**kw):
    args = {"recall_target": 0.9, "precision_target": 0.9, "budget": 10, "rng": RNG} | kw
    proxy = args.pop("proxy", PROXY)
    return select_cascade(proxy, oracle, **args)


def agg(**kw):
    args = {"agg": "count", "error_target": 0.1, "budget": 10, "rng": RNG} | kw
    n = args.pop("n_rows", 50)
    return estimate_aggregate(n, oracle, **args)


@pytest.mark.parametrize("op", [rt, pt])
@pytest.mark.parametrize("target", [0.0, 1.0, -0.2, 1.5, float("nan"), True])
def test_target_outside_open_unit_interval(op, target) -> None:
    with pytest.raises(ValueError, match="target"):
        op(target=target)


@pytest.mark.parametrize("target", [0.0, 1.0, 2.0])
def test_cascade_and_aggregate_targets(target) -> None:
    with pytest.raises(ValueError, match="recall target"):
        cascade(recall_target=target)
    with pytest.raises(ValueError, match="precision target"):
        cascade(precision_target=target)
    with pytest.raises(ValueError, match="error target"):
        agg(error_target=target)


@pytest.mark.parametrize("op", [rt, pt, cascade, agg])
@pytest.mark.parametrize("confidence", [0.5, 0.3, 1.0, 1.2])
def test_confidence_must_be_above_half_and_below_one(op, confidence) -> None:
    with pytest.raises(ValueError, match="confidence"):
        op(confidence=confidence)


@pytest.mark.parametrize("op", [rt, pt, cascade, agg])
@pytest.mark.parametrize("budget", [0, -5, 2.5])
def test_budget_must_be_a_positive_integer(op, budget) -> None:
    with pytest.raises(ValueError, match="budget"):
        op(budget=budget)


@pytest.mark.parametrize("op", [rt, pt, cascade])
@pytest.mark.parametrize(
    "proxy, msg",
    [
        (np.array([0.1, np.nan, 0.3]), "finite"),
        (np.array([0.1, np.inf]), "finite"),
        (np.array([0.1, 1.2]), r"\[0, 1\]"),
        (np.array([-0.1, 0.5]), r"\[0, 1\]"),
        (np.zeros((2, 2)), "1-D"),
        (np.array([]), "empty"),
    ],
)
def test_proxy_must_be_finite_scores_in_unit_interval(op, proxy, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        op(proxy=proxy)


def test_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="50 rows"):
        agg(proxy=np.linspace(0, 1, 49))
    with pytest.raises(ValueError, match="answers"):
        select_recall_target(PROXY, lambda i: np.zeros(len(i) + 1), target=0.9, budget=10, rng=RNG)
    with pytest.raises(ValueError, match="answers"):
        estimate_aggregate(
            50,
            lambda i: (np.zeros(3), np.zeros(len(i))),
            agg="sum",
            error_target=0.1,
            budget=10,
            rng=RNG,
            value_bounds=(0, 1),
        )


def test_other_arguments() -> None:
    with pytest.raises(ValueError, match="agg"):
        agg(agg="median")
    with pytest.raises(ValueError, match="value_bounds"):
        agg(agg="sum", value_bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="values"):
        agg(agg="sum")  # the oracle returns no values
    with pytest.raises(ValueError, match="k must"):
        limit_search(PROXY, oracle, k=0, rng=RNG)
    with pytest.raises(ValueError, match="features"):
        train_proxy(np.zeros(5), oracle, budget=10, rng=RNG)
    with pytest.raises(ValueError, match="0/1"):
        select_recall_target(PROXY, lambda i: np.full(len(i), 3), target=0.9, budget=10, rng=RNG)
    with pytest.raises(ValueError, match="bound method"):
        rt(bound="exact-ish")
