"""Benchmark of the sampling operators against simple baselines, by repeated seeded trials.

    .venv/bin/python bench/bench_sampling.py [--trials N] [--agg-trials M] [--datasets imagenet,beta]

Datasets: the real SUPG ImageNet file (``../shared/data/supg/imagenet.csv``, skipped when absent)
and SUPG's synthetic generator (proxy ~ Beta(0.01, 2), label ~ Bernoulli(proxy), N = 10^6).
Queries at confidence 95%, budget 1000: RT 90%, PT 95%, cascade RT 90% + PT 90%; and
COUNT(*) WHERE label with error target 5%.

Methods (selection):
  sieve finite      our operators with finite-sample (betting / exact) bounds - the default
  sieve CLT         our operators with the CLT bound and SUPG's 90/10 mixing (asymptotic)
  (a) uniform naive uniform sample, threshold read off the sample, no confidence correction
  (b) uniform+corr  our finite-sample operators with a uniform sampling design (mix = 1)
  (c) full scan     label every row (calls = N), exact
Columns: success = share of trials meeting the target; precision/recall = means; calls = mean
distinct oracle calls; warned = share of results that flagged an unmet guarantee or a budget too
small for a useful answer (target_met False or a budget_hint).
Methods (COUNT): proxy-stratified and uniform (finite-sample betting intervals), uniform with a
CLT interval (no correction), full scan.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sampling import (  # noqa: E402
    estimate_aggregate,
    rank_proxy,
    select_cascade,
    select_precision_target,
    select_recall_target,
)

IMAGENET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "supg" / "imagenet.csv"
BUDGET = 1000
CONF = 0.95
RT, PT = 0.9, 0.95
CAS_RT, CAS_PT = 0.9, 0.9


def load(name: str) -> tuple[np.ndarray, np.ndarray] | None:
    if name == "imagenet":
        if not IMAGENET.exists():
            print(f"[imagenet] skipped: {IMAGENET} not found")
            return None
        raw = np.genfromtxt(IMAGENET, delimiter=",", names=True, dtype=None, encoding=None)
        return raw["proxy_score"].astype(np.float64), raw["label"].astype(np.int64)
    rng = np.random.default_rng(20240601)
    proxy = rng.beta(0.01, 2.0, 1_000_000)
    return proxy, (rng.random(proxy.size) < proxy).astype(np.int64)


# ------------------------------------------------------------------ naive uniform baselines


def _answer(n: int, order: np.ndarray, keep: int, idx: np.ndarray, y: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[order[:keep]] = True
    mask[idx[y == 0]] = False
    mask[idx[y == 1]] = True
    return np.flatnonzero(mask)


def naive_rt(proxy, labels, rp, rng, budget=BUDGET, gamma=RT):
    idx = rng.choice(proxy.size, size=budget, replace=False)
    y = labels[idx]
    pos = np.sort(proxy[idx[y == 1]])[::-1]
    if pos.size == 0:
        return idx[y == 1], budget
    tau = pos[int(np.ceil(gamma * pos.size)) - 1]
    return _answer(proxy.size, rp.order, rp.count_at_least(tau), idx, y), budget


def naive_pt(proxy, labels, rp, rng, budget=BUDGET, p=PT):
    idx = rng.choice(proxy.size, size=budget, replace=False)
    y = labels[idx]
    order = np.argsort(-proxy[idx], kind="stable")
    prec = np.cumsum(y[order]) / np.arange(1, budget + 1)
    ok = np.flatnonzero(prec >= p)
    if ok.size == 0:
        return idx[y == 1], budget
    tau = proxy[idx[order[ok.max()]]]
    return _answer(proxy.size, rp.order, rp.count_at_least(tau), idx, y), budget


def naive_cascade(proxy, labels, rp, rng, budget=BUDGET):
    half = budget // 2
    idx = rng.choice(proxy.size, size=half, replace=False)
    y = labels[idx]
    pos = np.sort(proxy[idx[y == 1]])[::-1]
    lo = pos[int(np.ceil(CAS_RT * pos.size)) - 1] if pos.size else 1.0
    order = np.argsort(-proxy[idx], kind="stable")
    prec = np.cumsum(y[order]) / np.arange(1, half + 1)
    ok = np.flatnonzero(prec >= CAS_PT)
    hi = proxy[idx[order[ok.max()]]] if ok.size else np.inf
    accept = rp.count_at_least(hi) if np.isfinite(hi) else 0
    reject = max(rp.count_at_least(lo), accept)
    band = rp.order[accept:reject]
    band = band[~np.isin(band, idx)][: budget - half]
    all_idx = np.concatenate([idx, band])
    return _answer(proxy.size, rp.order, accept, all_idx, labels[all_idx]), half + band.size


# ------------------------------------------------------------------ selection benchmark


def selection_methods(kind: str) -> dict[str, Callable]:
    if kind == "RT 90%":
        ops = {
            "sieve finite": lambda d, o, r: select_recall_target(d, o, target=RT, budget=BUDGET, rng=r),
            "sieve CLT": lambda d, o, r: select_recall_target(
                d, o, target=RT, budget=BUDGET, rng=r, bound="normal", mix=0.1
            ),
            "(b) uniform+corr": lambda d, o, r: select_recall_target(
                d, o, target=RT, budget=BUDGET, rng=r, mix=1.0
            ),
        }
        naive = naive_rt
    elif kind == "PT 95%":
        ops = {
            "sieve finite": lambda d, o, r: select_precision_target(d, o, target=PT, budget=BUDGET, rng=r),
            "sieve CLT": lambda d, o, r: select_precision_target(
                d, o, target=PT, budget=BUDGET, rng=r, bound="normal"
            ),
            "(b) uniform+corr": lambda d, o, r: select_precision_target(
                d, o, target=PT, budget=BUDGET, rng=r, mix=1.0
            ),
        }
        naive = naive_pt
    else:
        kw = {"recall_target": CAS_RT, "precision_target": CAS_PT, "budget": BUDGET}
        ops = {
            "sieve finite": lambda d, o, r: select_cascade(d, o, rng=r, **kw),
            "sieve CLT": lambda d, o, r: select_cascade(d, o, rng=r, bound="normal", mix=0.1, **kw),
            "(b) uniform+corr": lambda d, o, r: select_cascade(d, o, rng=r, mix=1.0, **kw),
        }
        naive = naive_cascade
    return {**ops, "(a) uniform naive": naive}


def bench_selection(name: str, proxy: np.ndarray, labels: np.ndarray, trials: int) -> None:
    rp = rank_proxy(proxy)
    n, npos = proxy.size, int(labels.sum())
    print(
        f"\n## {name}: N = {n:,}, positives = {npos:,}, budget = {BUDGET}, confidence = {CONF:.0%}, "
        f"{trials} trials"
    )
    head = (
        f"{'query':<20} {'method':<18} {'success':>8} {'precision':>10} {'recall':>8} {'calls':>9} "
        f"{'warned':>8} {'ms/trial':>9}"
    )
    print(head)
    print("-" * len(head))
    oracle = labels.__getitem__
    for kind in ("RT 90%", "PT 95%", "cascade RT90+PT90"):
        for method, fn in selection_methods(kind).items():
            succ, prec, rec, calls, flagged = [], [], [], [], []
            t0 = time.perf_counter()
            for seed in range(trials):
                rng = np.random.default_rng(seed)
                if method == "(a) uniform naive":
                    idx, c = fn(proxy, labels, rp, rng)
                    flag = False
                else:
                    res = fn(rp, oracle, rng)
                    idx, c = res.indices, res.oracle_calls
                    flag = not res.target_met or res.budget_hint is not None
                tp = int(labels[idx].sum())
                p = tp / idx.size if idx.size else 1.0
                r = tp / npos
                ok = {"RT 90%": r >= RT, "PT 95%": p >= PT}.get(kind, r >= CAS_RT and p >= CAS_PT)
                succ.append(ok)
                prec.append(p)
                rec.append(r)
                calls.append(c)
                flagged.append(flag)
            ms = (time.perf_counter() - t0) / trials * 1e3
            print(
                f"{kind:<20} {method:<18} {np.mean(succ):>8.2f} {np.mean(prec):>10.3f} {np.mean(rec):>8.3f} "
                f"{np.mean(calls):>9.0f} {np.mean(flagged):>8.2f} {ms:>9.1f}"
            )
        full = f"{1.0:>8.2f} {1.0:>10.3f} {1.0:>8.3f} {n:>9} {0.0:>8.2f} {'-':>9}"
        print(f"{kind:<20} {'(c) full scan':<18} {full}")


# ------------------------------------------------------------------ COUNT benchmark


def bench_count(name: str, proxy: np.ndarray, labels: np.ndarray, trials: int, budget: int) -> None:
    n = proxy.size
    truth = int(labels.sum())
    match = labels.astype(bool)
    print(
        f"\n## {name}: COUNT(*) WHERE label (truth {truth:,}), error target 5%, confidence {CONF:.0%}, "
        f"budget {budget:,}, {trials} trials"
    )
    head = f"{'method':<26} {'covered':>8} {'|err|<=5%':>10} {'met':>6} {'calls':>10} {'ms/trial':>9}"
    print(head)
    print("-" * len(head))
    methods = {
        "proxy-stratified (betting)": {"proxy": proxy},
        "uniform (betting)": {},
        "(a) uniform, CLT": {"bound": "normal"},
    }
    mean_calls = {}
    for method, kw in methods.items():
        cov, within, met, calls = [], [], [], []
        t0 = time.perf_counter()
        for seed in range(trials):
            res = estimate_aggregate(
                n,
                match.__getitem__,
                agg="count",
                error_target=0.05,
                budget=budget,
                confidence=CONF,
                rng=np.random.default_rng(seed),
                **kw,
            )
            cov.append(res.ci_low <= truth <= res.ci_high)
            within.append(abs(res.estimate - truth) <= 0.05 * truth)
            met.append(res.target_met)
            calls.append(res.oracle_calls)
        ms = (time.perf_counter() - t0) / trials * 1e3
        mean_calls[method] = np.mean(calls)
        print(
            f"{method:<26} {np.mean(cov):>8.2f} {np.mean(within):>10.2f} {np.mean(met):>6.2f} "
            f"{np.mean(calls):>10.0f} {ms:>9.1f}"
        )
    print(f"{'(c) full scan':<26} {1.0:>8.2f} {1.0:>10.2f} {1.0:>6.2f} {n:>10} {'-':>9}")
    ratio = mean_calls["uniform (betting)"] / mean_calls["proxy-stratified (betting)"]
    print(f"oracle calls, uniform / stratified (both finite-sample): {ratio:.2f}x")


def bench_recall_budgets(proxy: np.ndarray, labels: np.ndarray, trials: int) -> None:
    """Where the finite-sample recall target starts to pay off: precision against the budget."""
    rp = rank_proxy(proxy)
    npos = int(labels.sum())
    print(f"\n## beta: RT 90% finite-sample (betting) by budget, {trials} trials")
    head = f"{'budget':>8} {'success':>8} {'precision':>10} {'recall':>8} {'answer rows':>12} {'ms/trial':>9}"
    print(head)
    print("-" * len(head))
    for budget in (1000, 10_000, 20_000, 50_000):
        succ, prec, rec, size = [], [], [], []
        t0 = time.perf_counter()
        for seed in range(trials):
            res = select_recall_target(
                rp, labels.__getitem__, target=RT, budget=budget, rng=np.random.default_rng(seed)
            )
            tp = int(labels[res.indices].sum())
            succ.append(tp / npos >= RT)
            prec.append(tp / max(res.indices.size, 1))
            rec.append(tp / npos)
            size.append(res.indices.size)
        ms = (time.perf_counter() - t0) / trials * 1e3
        print(
            f"{budget:>8} {np.mean(succ):>8.2f} {np.mean(prec):>10.3f} {np.mean(rec):>8.3f} "
            f"{np.mean(size):>12.0f} {ms:>9.1f}"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=100, help="seeded trials per selection query (default 100)")
    ap.add_argument("--agg-trials", type=int, default=10, help="seeded trials per COUNT method (default 10)")
    ap.add_argument("--datasets", default="imagenet,beta", help="comma-separated: imagenet, beta")
    args = ap.parse_args(argv)
    for name in args.datasets.split(","):
        data = load(name)
        if data is None:
            continue
        proxy, labels = data
        bench_selection(name, proxy, labels, args.trials)
        # ImageNet's 50 positives need ~a census for 5%; the budget shows the shortfall honestly
        budget = proxy.size // 2 if name == "imagenet" else 600_000
        bench_count(name, proxy, labels, args.agg_trials, budget)
        if name == "beta":
            bench_recall_budgets(proxy, labels, min(args.trials, 20))


if __name__ == "__main__":
    main()
