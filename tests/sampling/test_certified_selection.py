"""'Certified' means certified: adversarial proxies, 100 seeded trials per operator.

Proxies with a blind spot (20% of the positives given the lowest scores), reversed (1 - score)
and constant, on Beta(0.05, 2) synthetic data (label ~ Bernoulli(proxy), N = 20,000, about
2.4% positives) and on the real SUPG ImageNet file when present. Under the default bound
("empirical", approximate) and the finite one ("betting"):

* among the trials whose result says ``certified_target_met``, the share that truly meets its
  target(s) must be at least the Binomial(n, 0.95) 0.1% quantile / n (one-sided: a certificate
  may be conservative, never optimistic beyond chance);
* the ``certified`` levels must be valid lower bounds on the returned rows' recall and
  precision in at least that share of all trials.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sampling import rank_proxy, select_cascade, select_precision_target, select_recall_target

from .conftest import Labelled

TRIALS = 100
CONF = 0.95
BUDGET = 1000


def floor(n: int) -> float:
    """Lowest acceptable success share over n trials: the Binomial(n, 0.95) 0.1% quantile."""
    return float(stats.binom.ppf(0.001, n, CONF) / n) if n else 1.0


def adversarial(base: Labelled, kind: str) -> Labelled:
    rng = np.random.default_rng(99)
    proxy = base.proxy.copy()
    if kind == "blind-spot":
        pos = np.flatnonzero(base.labels == 1)
        hidden = rng.choice(pos, size=max(1, pos.size // 5), replace=False)
        proxy[hidden] = rng.uniform(0.0, proxy.min() + 1e-12, hidden.size)
    elif kind == "reversed":
        proxy = 1.0 - proxy
    else:
        proxy = np.full_like(proxy, 0.5)
    return Labelled(f"{base.name}-{kind}", proxy, base.labels, rank_proxy(proxy))


@pytest.fixture(scope="module")
def beta05() -> Labelled:
    rng = np.random.default_rng(5)
    proxy = rng.beta(0.05, 2.0, 20_000)
    labels = (rng.random(proxy.size) < proxy).astype(np.int64)
    return Labelled("beta05", proxy, labels, rank_proxy(proxy))


OPS = {
    "RT": (select_recall_target, {"target": 0.9}),
    "PT": (select_precision_target, {"target": 0.9}),
    "cascade": (select_cascade, {"recall_target": 0.9, "precision_target": 0.9}),
}


def run(data: Labelled, op: str, bound: str) -> dict[str, np.ndarray]:
    fn, kw = OPS[op]
    out: dict[str, list] = {"met": [], "cert": [], "valid": []}
    for seed in range(TRIALS):
        res = fn(
            data.ranked,
            data.oracle,
            budget=BUDGET,
            rng=np.random.default_rng(seed),
            confidence=CONF,
            bound=bound,
            **kw,
        )
        assert res.oracle_calls <= BUDGET
        assert set(res.certified) == {"recall", "precision"}
        assert all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in res.certified.values())
        assert "claims" in res.details
        recall, precision = data.recall(res.indices), data.precision(res.indices)
        met = all((recall if name == "recall" else precision) >= level for name, level in res.targets.items())
        out["met"].append(met)
        out["cert"].append(res.certified_target_met)
        out["valid"].append(recall >= res.certified["recall"] and precision >= res.certified["precision"])
        if res.certified_target_met:
            assert res.target_met  # "target not met" never fires on a certified answer
    return {k: np.asarray(v) for k, v in out.items()}


def check(r: dict[str, np.ndarray]) -> None:
    certified = r["cert"]
    kept = r["met"][certified]
    assert (kept.mean() if kept.size else 1.0) >= floor(int(kept.size))
    assert r["valid"].mean() >= floor(TRIALS)


@pytest.mark.slow
@pytest.mark.parametrize("bound", ["empirical", "betting"])
@pytest.mark.parametrize("kind", ["blind-spot", "reversed", "constant"])
@pytest.mark.parametrize("op", ["RT", "PT", "cascade"])
def test_certified_claims_hold_on_adversarial_proxies(
    beta05: Labelled, op: str, kind: str, bound: str
) -> None:
    check(run(adversarial(beta05, kind), op, bound))


@pytest.mark.slow
@pytest.mark.parametrize("op", ["RT", "PT", "cascade"])
def test_certified_claims_hold_on_imagenet_with_a_blind_spot(imagenet: Labelled, op: str) -> None:
    check(run(adversarial(imagenet, "blind-spot"), op, "empirical"))


def test_default_bound_rt_with_blind_spot_does_not_claim_what_it_misses(beta05: Labelled) -> None:
    """The issue's failure: the default bound misses RT 90% behind a blind spot; the
    certificate must not say otherwise (and the estimate is still reported)."""
    r = run(adversarial(beta05, "blind-spot"), "RT", "empirical")
    assert (r["cert"] & ~r["met"]).sum() <= TRIALS - floor(TRIALS) * TRIALS
    assert r["valid"].mean() >= floor(TRIALS)


def test_finite_rt_certifies_its_own_claim(beta05: Labelled) -> None:
    res = select_recall_target(
        beta05.ranked, beta05.oracle, target=0.9, budget=BUDGET, rng=np.random.default_rng(0)
    )
    assert res.certified_target_met and res.certified["recall"] >= 0.9
    assert res.details["claims"]["recall"].startswith(("betting", "exact"))


def test_pt_names_the_exact_test_it_used() -> None:
    rng = np.random.default_rng(7)
    proxy = rng.beta(2.0, 1.0, 50_000)
    labels = (rng.random(proxy.size) < proxy**0.3).astype(np.int64)
    data = Labelled("wide", proxy, labels, rank_proxy(proxy))
    res = select_precision_target(
        data.ranked, data.oracle, target=0.95, budget=BUDGET, rng=np.random.default_rng(1), bound="empirical"
    )
    assert "exact hypergeometric" in res.details["claims"]["precision"] or res.thresholds["tau"] == np.inf
    assert res.finite_sample and res.certified_target_met
