"""SieveDB's finite-sample selection against BARGAIN (SIGMOD 2026, PyPI ``bargain``), side by side.

    .venv/bin/python bench/bench_bargain.py [--seeds 20] [--budget 1000] [--delta 0.05]
                                            [--datasets imagenet,beta,beta05,sep] [--bound betting]

Both methods run in-process on the same proxy array and the same oracle labels, at the same
budget and δ, for each seed: RT 90% (recall target) and PT 90% (precision target). BARGAIN gets
the proxy and oracle through thin wrappers over the arrays (its ``Proxy``/``Oracle`` classes,
vectorised; no network). Its oracle counts distinct labelled rows, as ours does.

Datasets:
  imagenet  the real SUPG ImageNet file (../shared/data/supg/imagenet.csv; skipped when absent),
            50,000 rows, 50 positives (0.1%)
  beta      SUPG's generator: proxy ~ Beta(0.01, 2), label ~ Bernoulli(proxy), N = 10^6 (0.5%)
  beta05    proxy ~ Beta(0.05, 2), label ~ Bernoulli(proxy), N = 100,000 (about 2.4% positives)
  sep       a dense, well-separated top: 10% positives, proxy ~ Beta(20, 1.5) for positives and
            Beta(1, 30) for negatives, N = 20,000 (the in-process analogue of the digits MLP)

Columns: success = share of seeds meeting the target; precision / recall = means over seeds;
calls = mean distinct oracle calls. A MET/MISSED line per dataset and query compares SieveDB to
BARGAIN on the other metric: precision for RT, recall for PT (SieveDB must be >= BARGAIN).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sampling import rank_proxy, select_precision_target, select_recall_target  # noqa: E402

log = logging.getLogger("bench_bargain")
IMAGENET = Path(__file__).resolve().parents[2] / "shared" / "data" / "supg" / "imagenet.csv"
TARGET = 0.9


@dataclass(frozen=True)
class Dataset:
    name: str
    proxy: np.ndarray
    labels: np.ndarray


def load(name: str) -> Dataset | None:
    """One benchmark dataset, or None (with a log line) when its file is absent."""
    if name == "imagenet":
        if not IMAGENET.exists():
            log.warning("skipping imagenet: %s not found", IMAGENET)
            return None
        raw = np.genfromtxt(IMAGENET, delimiter=",", names=True, dtype=None, encoding=None)
        return Dataset(
            name, raw["proxy_score"].astype(np.float64), raw["label"].astype(bool).astype(np.int64)
        )
    if name == "sep":
        return separated()
    shape, n, seed = {"beta": (0.01, 1_000_000, 20240601), "beta05": (0.05, 100_000, 5)}[name]
    rng = np.random.default_rng(seed)
    proxy = rng.beta(shape, 2.0, n)
    return Dataset(name, proxy, (rng.random(n) < proxy).astype(np.int64))


def separated(n: int = 20_000, seed: int = 1) -> Dataset:
    """Dense top, nearly no overlap: every positive outranks every negative on most draws."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.1).astype(np.int64)
    proxy = np.where(labels == 1, rng.beta(20, 1.5, n), rng.beta(1, 30, n))
    return Dataset("sep", proxy, labels)


def bargain_models(data: Dataset) -> tuple[object, object]:
    """BARGAIN proxy and oracle over the arrays: records are row numbers; pred 1 with the
    proxy as score, so BARGAIN orders rows by the proxy exactly as we do."""
    # deferred: importing BARGAIN pulls in its OpenAI model module
    from BARGAIN import Oracle, Proxy

    class ArrayProxy(Proxy):
        def get_preds_and_scores(self, indxs, data_records):  # noqa: ANN001, ANN202 (BARGAIN's API)
            rows = np.asarray(data_records, dtype=np.int64)
            return np.ones(rows.size, dtype=np.int64), data.proxy[rows]

    class ArrayOracle(Oracle):
        def get_pred(self, data_records, indxs=None):  # noqa: ANN001, ANN202 (BARGAIN's API)
            rows = np.asarray(data_records, dtype=np.int64)
            for r in np.unique(rows).tolist():
                self.preds_dict[r] = int(data.labels[r])
            return data.labels[rows]

    return ArrayProxy(verbose=False), ArrayOracle(verbose=False)


def run_bargain(data: Dataset, kind: str, budget: int, delta: float, seed: int) -> tuple[np.ndarray, int]:
    from BARGAIN import BARGAIN_P, BARGAIN_R  # deferred, see bargain_models

    proxy, oracle = bargain_models(data)
    cls = BARGAIN_R if kind == "RT" else BARGAIN_P
    algo = cls(proxy, oracle, delta=delta, target=TARGET, budget=budget, seed=seed)
    out = np.asarray(algo.process(np.arange(data.labels.size)), dtype=np.int64)
    return out, oracle.get_number_preds()


def run_sieve(
    data: Dataset, ranked: object, kind: str, budget: int, delta: float, seed: int, bound: str
) -> tuple[np.ndarray, int]:
    op = select_recall_target if kind == "RT" else select_precision_target
    res = op(
        ranked,
        lambda idx: data.labels[idx],
        target=TARGET,
        budget=budget,
        rng=np.random.default_rng(seed),
        confidence=1.0 - delta,
        bound=bound,
    )
    return res.indices, res.oracle_calls


def metrics(data: Dataset, rows: np.ndarray) -> tuple[float, float]:
    hits = float(data.labels[rows].sum())
    precision = hits / rows.size if rows.size else 1.0
    return precision, hits / max(float(data.labels.sum()), 1.0)


def trial_table(
    runs: dict[str, Callable[[int], tuple[np.ndarray, int]]], data: Dataset, kind: str, seeds: int
):
    """Per method: success rate, mean precision, mean recall, mean calls over ``seeds`` seeds."""
    table = {}
    for method, run in runs.items():
        prec, rec, calls = [], [], []
        for seed in range(seeds):
            rows, n_calls = run(seed)
            p, r = metrics(data, rows)
            prec.append(p)
            rec.append(r)
            calls.append(n_calls)
        prec, rec = np.asarray(prec), np.asarray(rec)
        ok = rec >= TARGET if kind == "RT" else prec >= TARGET
        table[method] = (float(ok.mean()), float(prec.mean()), float(rec.mean()), float(np.mean(calls)))
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--datasets", default="imagenet,beta,beta05,sep")
    ap.add_argument("--bound", default="betting", help="SieveDB's bound (betting = SET sieve.bound='finite')")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    missed = 0
    for name in args.datasets.split(","):
        data = load(name)
        if data is None:
            continue
        ranked = rank_proxy(data.proxy)
        log.info(
            "\n%s: %d rows, %d positives; budget %d, delta %g, target %.0f%%",
            name,
            data.labels.size,
            int(data.labels.sum()),
            args.budget,
            args.delta,
            100 * TARGET,
        )
        for kind in ("RT", "PT"):
            runs = {
                f"sieve {args.bound}": lambda s, k=kind, d=data, r=ranked: run_sieve(
                    d, r, k, args.budget, args.delta, s, args.bound
                ),
                "BARGAIN": lambda s, k=kind, d=data: run_bargain(d, k, args.budget, args.delta, s),
            }
            t0 = time.perf_counter()
            table = trial_table(runs, data, kind, args.seeds)
            log.info(
                "  %s %.0f%%  (%d seeds, %.1fs)", kind, 100 * TARGET, args.seeds, time.perf_counter() - t0
            )
            log.info("    %-16s %8s %10s %8s %8s", "method", "success", "precision", "recall", "calls")
            for method, (succ, prec, rec, calls) in table.items():
                log.info("    %-16s %8.2f %10.4f %8.4f %8.1f", method, succ, prec, rec, calls)
            col = 1 if kind == "RT" else 2
            ours, theirs = table[f"sieve {args.bound}"][col], table["BARGAIN"][col]
            verdict = "MET" if ours >= theirs else "MISSED"
            missed += verdict == "MISSED"
            what = "precision" if kind == "RT" else "recall"
            log.info("    %s: %s %s %.4f vs BARGAIN %.4f", verdict, kind, what, ours, theirs)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
