"""Benchmark of the sampling operators against simple baselines, by repeated seeded trials.

    .venv/bin/python bench/bench_sampling.py [--trials N] [--agg-trials M] [--datasets imagenet,beta]
    .venv/bin/python bench/bench_sampling.py --quick        # about a minute: fewer trials, COUNT only

Datasets: the real SUPG ImageNet file (``../shared/data/supg/imagenet.csv``, skipped when absent)
and SUPG's synthetic generator (proxy ~ Beta(0.01, 2), label ~ Bernoulli(proxy), N = 10^6; each
row also gets a value ~ Gamma(2, 5) clipped to [0, 100] for SUM/AVG).

Selection queries at confidence 95%, budget 1000: RT 90%, PT 95%, cascade RT 90% + PT 90%.
  sieve finite      our operators with finite-sample (betting / exact) bounds
  sieve empirical   our operators with bound="empirical" (empirical Bernstein, observed range,
                    default mix 0.1; PT's stage 2 stays exact): approximate guarantee
  sieve CLT         our operators with the CLT bound and SUPG's 90/10 mixing (asymptotic)
  (a) uniform naive uniform sample, threshold read off the sample, no confidence correction
  (b) uniform+corr  our finite-sample operators with a uniform sampling design (mix = 1)
  (c) full scan     label every row (calls = N), exact
Columns: success = share of trials meeting the target; precision/recall = means; calls = mean
distinct oracle calls; warned = share of results that flagged an unmet guarantee or a budget too
small for a useful answer (target_met False or a budget_hint).

Aggregates (error target 5%, confidence 95%): the operator samples in rounds until its interval
meets the target or the budget cap runs out. For each query it runs proxy-stratified and uniform
sampling with the same bound (betting: finite-sample, anytime-valid, also what bound="empirical"
uses for aggregates; normal: CLT, asymptotic) and reports the oracle calls actually used when the
target was met and the share of trials that met it. The ratio uniform / stratified of the mean
calls-to-meet (a trial that missed counts as the whole cap, so the ratio is then a lower bound,
">=") is checked against the target "stratified needs >= 2x fewer oracle calls than uniform at the
same error target when the proxy is good": MET or MISSED.
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
            "sieve empirical": lambda d, o, r: select_recall_target(
                d, o, target=RT, budget=BUDGET, rng=r, bound="empirical"
            ),
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
            "sieve empirical": lambda d, o, r: select_precision_target(
                d, o, target=PT, budget=BUDGET, rng=r, bound="empirical"
            ),
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
            "sieve empirical": lambda d, o, r: select_cascade(d, o, rng=r, bound="empirical", **kw),
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


# ------------------------------------------------------------------ aggregate benchmark

AGG_TARGET = 0.05
VALUE_BOUNDS = (0.0, 100.0)


def row_values(n: int) -> np.ndarray:
    """A value per row for SUM/AVG, independent of the label: Gamma(2, 5) clipped to [0, 100]."""
    return np.random.default_rng(7).gamma(2.0, 5.0, n).clip(*VALUE_BOUNDS)


def bench_aggregates(
    name: str, proxy: np.ndarray, labels: np.ndarray, trials: int, cap: int, aggs: list[str]
) -> None:
    n = proxy.size
    match = labels.astype(bool)
    values = row_values(n)
    print(
        f"\n## {name}: aggregates over rows WHERE label ({int(match.sum()):,} of {n:,}), error target "
        f"{AGG_TARGET:.0%}, confidence {CONF:.0%}, budget cap {cap:,}, {trials} trials"
    )
    if name == "imagenet":
        print(
            "(50 positives: +-5% is +-2.5 rows, so any valid interval needs a near-census; the cap "
            "shows the shortfall)"
        )
    head = (
        f"{'query':<12} {'design':<11} {'bound':<8} {'covered':>8} {'|err|<=5%':>10} {'met':>6} "
        f"{'calls(met)':>11} {'calls(all)':>11} {'ms/trial':>9}"
    )
    print(head)
    print("-" * len(head))
    verdicts = []
    for agg in aggs:
        truth = {
            "count": float(match.sum()),
            "sum": float(values[match].sum()),
            "avg": float(values[match].mean()),
        }[agg]
        query = {"count": "COUNT(*)", "sum": "SUM(value)", "avg": "AVG(value)"}[agg]
        if agg == "count":
            oracle, extra = match.__getitem__, {}
        else:
            oracle, extra = (lambda i: (match[i], values[i])), {"value_bounds": VALUE_BOUNDS}
        to_meet: dict[tuple[str, str], tuple[float, bool, bool]] = {}
        for bound in ("betting", "normal"):
            for design, kw in (("stratified", {"proxy": proxy}), ("uniform", {})):
                cov, within, met, calls = [], [], [], []
                t0 = time.perf_counter()
                for seed in range(trials):
                    res = estimate_aggregate(
                        n,
                        oracle,
                        agg=agg,
                        error_target=AGG_TARGET,
                        budget=cap,
                        confidence=CONF,
                        rng=np.random.default_rng(seed),
                        bound=bound,
                        **kw,
                        **extra,
                    )
                    cov.append(res.ci_low <= truth <= res.ci_high)
                    within.append(abs(res.estimate - truth) <= AGG_TARGET * abs(truth))
                    met.append(res.target_met)
                    calls.append(res.oracle_calls)
                ms = (time.perf_counter() - t0) / trials * 1e3
                met_a, calls_a = np.asarray(met), np.asarray(calls, dtype=float)
                # calls needed to meet: the calls used, or at least the cap when the target was missed
                need = np.where(met_a, calls_a, float(cap))
                to_meet[(bound, design)] = (float(need.mean()), bool(met_a.all()), bool(met_a.any()))
                calls_met = f"{calls_a[met_a].mean():>11,.0f}" if met_a.any() else f"{'-':>11}"
                print(
                    f"{query:<12} {design:<11} {bound:<8} {np.mean(cov):>8.2f} {np.mean(within):>10.2f} "
                    f"{met_a.mean():>6.2f} {calls_met} {calls_a.mean():>11,.0f} {ms:>9.1f}"
                )
        print(
            f"{query:<12} {'full scan':<11} {'exact':<8} {1.0:>8.2f} {1.0:>10.2f} {1.0:>6.2f} "
            f"{n:>11,} {n:>11,} {'-':>9}"
        )
        for bound in ("betting", "normal"):
            strat, unif = to_meet[(bound, "stratified")], to_meet[(bound, "uniform")]
            if not strat[2]:
                verdicts.append(f"{query} {bound}: stratified never met the target within the cap: MISSED")
                continue
            ratio = unif[0] / strat[0]
            # a missed uniform trial makes the ratio a lower bound; a missed stratified one an upper
            sign = (
                "~"
                if not strat[1] and not unif[1]
                else ("<=" if not strat[1] else (">=" if not unif[1] else ""))
            )
            ok = ratio >= 2.0 and strat[1]
            verdicts.append(
                f"{query} {bound}: oracle calls to meet {AGG_TARGET:.0%}, uniform / stratified = "
                f"{sign}{ratio:.2f}x (target >= 2x): {'MET' if ok else 'MISSED'}"
            )
    print("\n".join(verdicts))


def bench_recall_budgets(proxy: np.ndarray, labels: np.ndarray, trials: int, budgets: list[int]) -> None:
    """Where the recall target starts to pay off: precision against the budget, per bound."""
    rp = rank_proxy(proxy)
    npos = int(labels.sum())
    print(f"\n## beta: RT 90% by budget and bound, {trials} trials")
    head = (
        f"{'budget':>8} {'bound':<10} {'success':>8} {'precision':>10} {'recall':>8} {'answer rows':>12} "
        f"{'ms/trial':>9}"
    )
    print(head)
    print("-" * len(head))
    for budget in budgets:
        for bound in ("betting", "empirical"):
            succ, prec, rec, size = [], [], [], []
            t0 = time.perf_counter()
            for seed in range(trials):
                res = select_recall_target(
                    rp,
                    labels.__getitem__,
                    target=RT,
                    budget=budget,
                    rng=np.random.default_rng(seed),
                    bound=bound,
                )
                tp = int(labels[res.indices].sum())
                succ.append(tp / npos >= RT)
                prec.append(tp / max(res.indices.size, 1))
                rec.append(tp / npos)
                size.append(res.indices.size)
            ms = (time.perf_counter() - t0) / trials * 1e3
            print(
                f"{budget:>8} {bound:<10} {np.mean(succ):>8.2f} {np.mean(prec):>10.3f} {np.mean(rec):>8.3f} "
                f"{np.mean(size):>12.0f} {ms:>9.1f}"
            )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=100, help="seeded trials per selection query (default 100)")
    ap.add_argument(
        "--agg-trials", type=int, default=8, help="seeded trials per aggregate method (default 8)"
    )
    ap.add_argument("--datasets", default="imagenet,beta", help="comma-separated: imagenet, beta")
    ap.add_argument(
        "--aggs", default="count,sum,avg", help="aggregates on beta: count, sum, avg (default all)"
    )
    ap.add_argument(
        "--budgets", default="1000,10000,20000,50000", help="budgets of the RT-by-budget table on beta"
    )
    ap.add_argument(
        "--quick", action="store_true", help="20 selection trials, 3 aggregate trials, COUNT only, 2 budgets"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.trials, args.agg_trials, args.aggs, args.budgets = 20, 3, "count", "1000,20000"
    aggs = [a.strip() for a in args.aggs.split(",") if a.strip()]
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    t0 = time.perf_counter()
    for name in args.datasets.split(","):
        data = load(name)
        if data is None:
            continue
        proxy, labels = data
        bench_selection(name, proxy, labels, args.trials)
        if name == "imagenet":
            # 50 positives need ~a census for 5%; the cap (half the table) shows the shortfall
            bench_aggregates(name, proxy, labels, args.agg_trials, proxy.size // 2, ["count"])
        else:
            bench_aggregates(name, proxy, labels, args.agg_trials, 900_000, aggs)
            bench_recall_budgets(proxy, labels, min(args.trials, 20), budgets)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
