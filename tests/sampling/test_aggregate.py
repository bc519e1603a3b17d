"""COUNT / SUM / AVG with relative error targets: coverage, stopping, stratification gains."""

from __future__ import annotations

import numpy as np
import pytest

from sampling import estimate_aggregate

from .conftest import DELTA, TRIALS, success_floor

CONF = 1.0 - DELTA


@pytest.fixture(scope="module")
def grouped() -> dict[str, np.ndarray]:
    """20,000 rows, 3 groups, a useful proxy, values in [0, 40] that depend on the group."""
    rng = np.random.default_rng(17)
    n = 20_000
    proxy = rng.beta(0.5, 1.5, n)
    match = rng.random(n) < np.clip(1.6 * proxy, 0, 1)
    group = rng.integers(0, 3, n)
    values = np.clip(rng.gamma(2.0, 2.0 + group, n), 0, 40)
    return {"proxy": proxy, "match": match, "group": group, "values": values}


def _truth(d: dict[str, np.ndarray], agg: str) -> dict[int, float]:
    out = {}
    for g in range(3):
        sel = d["match"] & (d["group"] == g)
        out[g] = {"count": sel.sum(), "sum": d["values"][sel].sum(), "avg": d["values"][sel].mean()}[agg]
    return out


@pytest.mark.parametrize("agg", ["count", "sum", "avg"])
def test_grouped_intervals_cover_jointly(grouped, agg: str) -> None:
    """All three group intervals hold together in >= 95% of trials (binomial tolerance), and
    when the target is reported met the estimate is within the relative error of the truth."""
    d = grouped
    truth = _truth(d, agg)

    def oracle(i: np.ndarray):
        return d["match"][i], d["values"][i], d["group"][i]

    covered = within = met = 0
    for seed in range(TRIALS):
        res = estimate_aggregate(
            d["match"].size,
            oracle,
            agg=agg,
            error_target=0.15,
            budget=8000,
            confidence=CONF,
            rng=np.random.default_rng(seed),
            proxy=d["proxy"],
            value_bounds=(0.0, 40.0),
        )
        assert set(res.groups) == {0, 1, 2} and res.oracle_calls <= 8000
        assert res.delta_split["per_group"] == pytest.approx(DELTA / 3)
        covered += all(res.groups[g].ci_low <= truth[g] <= res.groups[g].ci_high for g in range(3))
        if res.target_met:
            met += 1
            within += all(abs(res.groups[g].estimate - truth[g]) <= 0.15 * truth[g] for g in range(3))
    assert covered / TRIALS >= success_floor(CONF, TRIALS)
    assert met >= 0.9 * TRIALS  # the budget is enough for this target
    assert within / met >= success_floor(CONF, met)


def test_uniform_count_interval_covers() -> None:
    rng = np.random.default_rng(2)
    n = 50_000
    match = rng.random(n) < 0.07
    hits = 0
    for seed in range(TRIALS):
        res = estimate_aggregate(
            n,
            lambda i: match[i],
            agg="count",
            error_target=0.15,
            budget=4000,
            rng=np.random.default_rng(seed),
        )
        assert res.design == "uniform" and res.finite_sample
        hits += res.ci_low <= match.sum() <= res.ci_high
    assert hits / TRIALS >= success_floor(CONF, TRIALS)


def test_stratified_needs_at_least_half_the_calls_of_uniform_with_a_good_proxy() -> None:
    rng = np.random.default_rng(5)
    n = 100_000
    proxy = rng.random(n)
    match = proxy + rng.normal(0.0, 0.05, n) > 0.8  # the proxy nearly decides the predicate
    calls = {}
    for name, p in (("uniform", None), ("stratified", proxy)):
        used = []
        for seed in range(10):
            res = estimate_aggregate(
                n,
                lambda i: match[i],
                agg="count",
                error_target=0.05,
                budget=30_000,
                rng=np.random.default_rng(seed),
                proxy=p,
                strata=16,
            )
            assert res.target_met and res.ci_low <= match.sum() <= res.ci_high
            used.append(res.oracle_calls)
        calls[name] = np.mean(used)
    assert calls["uniform"] >= 2.0 * calls["stratified"], calls


def test_unmet_target_reports_a_budget_estimate() -> None:
    rng = np.random.default_rng(9)
    n = 100_000
    match = rng.random(n) < 0.02
    res = estimate_aggregate(n, lambda i: match[i], agg="count", error_target=0.02, budget=500, rng=rng)
    assert not res.target_met
    assert res.oracle_calls <= 500
    assert res.budget_needed is not None and res.budget_needed > 10 * 500
    assert "not reached" in res.budget_hint
    assert res.ci_low <= match.sum() <= res.ci_high


def test_budget_covering_the_table_gives_the_exact_answer() -> None:
    rng = np.random.default_rng(1)
    n = 300
    match = rng.random(n) < 0.4
    vals = rng.normal(3.0, 1.0, n)
    grp = rng.integers(0, 2, n)
    res = estimate_aggregate(
        n, lambda i: (match[i], vals[i], grp[i]), agg="avg", error_target=0.01, budget=300, rng=rng
    )
    assert res.design == "census" and res.target_met and res.oracle_calls == 300
    for g in (0, 1):
        exact = vals[match & (grp == g)].mean()
        assert res.groups[g].estimate == pytest.approx(exact)
        assert res.groups[g].ci_low == res.groups[g].ci_high == pytest.approx(exact)


def test_sum_with_negative_values_and_declared_groups() -> None:
    rng = np.random.default_rng(4)
    n = 20_000
    match = rng.random(n) < 0.5
    vals = rng.uniform(-1.0, 5.0, n)
    grp = np.where(rng.random(n) < 0.5, "a", "b")
    truth = {g: vals[match & (grp == g)].sum() for g in ("a", "b")}
    res = estimate_aggregate(
        n,
        lambda i: (match[i], vals[i], grp[i]),
        agg="sum",
        error_target=0.1,
        budget=6000,
        rng=rng,
        value_bounds=(-1.0, 5.0),
        group_keys=["a", "b", "c"],
    )
    assert res.delta_split["per_group"] == pytest.approx(DELTA / 3)
    for g in ("a", "b"):
        assert res.groups[g].ci_low <= truth[g] <= res.groups[g].ci_high
    assert res.groups["c"].estimate == pytest.approx(
        0.0, abs=res.groups["c"].ci_high - res.groups["c"].ci_low
    )
    assert not res.groups["c"].target_met  # an empty group has no relative error to meet


def test_avg_without_value_bounds_is_flagged_asymptotic() -> None:
    rng = np.random.default_rng(6)
    n = 10_000
    vals = rng.exponential(2.0, n)
    res = estimate_aggregate(
        n, lambda i: (np.ones(len(i), bool), vals[i]), agg="avg", error_target=0.1, budget=2000, rng=rng
    )
    assert not res.finite_sample
    assert res.ci_low <= vals.mean() <= res.ci_high
