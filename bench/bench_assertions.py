"""Benchmark of model assertions: choosing what to label next (active learning), by seeded trials.

    .venv/bin/python bench/bench_assertions.py                  # every section
    .venv/bin/python bench/bench_assertions.py --section al     # active-learning curves only
    .venv/bin/python bench/bench_assertions.py --section al --seeds 3 --rounds 5

Active learning ("al"): scikit-learn's digits (1,797 8x8 images), 30% held out for test accuracy,
the rest the pool. A LogisticRegression starts from 50 random labelled pool rows; each round a
strategy picks 50 unlabelled rows, their true digits are revealed, the model is retrained, and the
test accuracy recorded. Three assertions over the model's outputs flag likely errors without labels:
  shift_flip     the prediction changes when the image moves by half a pixel (blended with its
                 1-pixel shift up, down, left or right) in any of the 4 directions;
                 severity = the share of directions that change it (a consistency assertion, like
                 the paper's). A whole-pixel shift is too coarse for 8x8 images: it changed the
                 prediction of 96-99% of the pool rows, so it flagged everything.
  top2_close     the top two class probabilities are within 0.2; severity = 1 - margin / 0.2
  knn_disagree   the prediction differs from the majority prediction of the row's 5 nearest pool
                 neighbours (pixel space); severity = the share of neighbours that disagree
Flags are counted over the whole pool after each retraining and fed to BAL as its history (labels
drawn from an arm in the round, flags after). BAL proposes flagged rows only; when fewer than 50
unlabelled rows are flagged the round is topped up at random (counted as "topped up"), so every
strategy spends the same labels. Strategies: bal, uncertainty (lowest max-probability), random.
Printed: mean test accuracy per round per strategy, and whether "BAL > random (mean accuracy over
rounds 3..10)" was MET or MISSED.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sampling.active import Candidate, choose_labels  # noqa: E402

log = logging.getLogger("bench_assertions")

STRATEGIES = ("bal", "uncertainty", "random")
MARGIN = 0.2
NEIGHBOURS = 5
# Rounds compared in the headline (1-based, inclusive): the first rounds mostly reflect the shared start.
FIRST_COMPARED_ROUND = 3


@dataclass(frozen=True)
class DigitsTask:
    """One seeded split: pool images (flattened, scaled to [0, 1]) with labels, and a test set."""

    pool_x: np.ndarray
    pool_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    neighbours: np.ndarray  # (pool, NEIGHBOURS) indices of each pool row's nearest other rows


def digits_task(seed: int, test_share: float = 0.3) -> DigitsTask:
    digits = load_digits()
    x = digits.data / 16.0
    pool_x, test_x, pool_y, test_y = train_test_split(
        x, digits.target, test_size=test_share, random_state=seed, stratify=digits.target
    )
    # One neighbour more than needed: the nearest row is the row itself.
    _, idx = NearestNeighbors(n_neighbors=NEIGHBOURS + 1).fit(pool_x).kneighbors(pool_x)
    return DigitsTask(pool_x, pool_y, test_x, test_y, idx[:, 1:])


def fit_model(x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    return LogisticRegression(max_iter=2000).fit(x, y)


def _shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Images moved by (dy, dx) pixels, the uncovered edge filled with background (0)."""
    img = np.roll(x.reshape(-1, 8, 8), (dy, dx), axis=(1, 2))
    if dy:
        img[:, 0 if dy > 0 else -1, :] = 0.0
    if dx:
        img[:, :, 0 if dx > 0 else -1] = 0.0
    return img.reshape(len(x), -1)


SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))
MIN_FLIP_SHARE = 0.25


def shift_flip(model: LogisticRegression, task: DigitsTask, proba: np.ndarray) -> np.ndarray:
    pred = model.classes_[proba.argmax(axis=1)]
    x = task.pool_x
    flips = np.mean([model.predict(0.5 * (x + _shifted(x, dy, dx))) != pred for dy, dx in SHIFTS], axis=0)
    return np.where(flips >= MIN_FLIP_SHARE, flips, 0.0)


def top2_close(model: LogisticRegression, task: DigitsTask, proba: np.ndarray) -> np.ndarray:
    top2 = np.sort(proba, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    return np.clip(1.0 - margin / MARGIN, 0.0, None)


def knn_disagree(model: LogisticRegression, task: DigitsTask, proba: np.ndarray) -> np.ndarray:
    pred = proba.argmax(axis=1)
    theirs = pred[task.neighbours]
    majority = np.array([np.bincount(row).argmax() for row in theirs])
    disagree = np.mean(theirs != pred[:, None], axis=1)
    return np.where(majority != pred, disagree, 0.0)


Assertion = Callable[[LogisticRegression, DigitsTask, np.ndarray], np.ndarray]
ASSERTIONS: dict[str, Assertion] = {
    "shift_flip": shift_flip,
    "top2_close": top2_close,
    "knn_disagree": knn_disagree,
}


@dataclass
class RunState:
    """One strategy's run on one seed: what is labelled, and BAL's history per assertion."""

    labelled: np.ndarray  # bool over the pool
    history: dict[str, list[tuple[int, int]]]
    topped_up: int = 0


def _severities(model: LogisticRegression, task: DigitsTask) -> dict[str, np.ndarray]:
    proba = model.predict_proba(task.pool_x)
    return {name: check(model, task, proba) for name, check in ASSERTIONS.items()}


def _pick_round(
    strategy: str,
    state: RunState,
    model: LogisticRegression,
    severity: dict[str, np.ndarray],
    task: DigitsTask,
    n: int,
    rng: np.random.Generator,
) -> np.ndarray:
    open_rows = np.flatnonzero(~state.labelled)
    candidates = [
        Candidate(int(i), name, float(sev[i]))
        for name, sev in severity.items()
        for i in open_rows
        if sev[i] > 0
    ]
    confidence = None
    if strategy == "uncertainty":
        proba = model.predict_proba(task.pool_x[open_rows])
        confidence = dict(zip(open_rows.tolist(), proba.max(axis=1).tolist(), strict=True))
    keys = choose_labels(
        candidates,
        n,
        strategy,
        history=state.history,
        confidence=confidence,
        all_keys=open_rows.tolist(),
        rng=rng,
    )
    picked = np.array(keys, dtype=int)
    if len(picked) < n:  # BAL proposes flagged rows only: top the round up so budgets stay equal
        rest = np.setdiff1d(open_rows, picked)
        extra = rng.choice(rest, size=min(n - len(picked), len(rest)), replace=False)
        state.topped_up += len(extra)
        picked = np.concatenate([picked, extra])
    return picked


def run_strategy(
    task: DigitsTask, strategy: str, seed: int, rounds: int, initial: int, per_round: int
) -> tuple[np.ndarray, RunState]:
    """Test accuracy after the initial labels and after each round, and the run's final state."""
    rng = np.random.default_rng(seed)
    state = RunState(np.zeros(len(task.pool_y), dtype=bool), {name: [] for name in ASSERTIONS})
    state.labelled[rng.choice(len(task.pool_y), size=initial, replace=False)] = True
    accuracy = []
    labels_from: dict[str, int] = dict.fromkeys(ASSERTIONS, 0)
    for _ in range(rounds + 1):
        model = fit_model(task.pool_x[state.labelled], task.pool_y[state.labelled])
        accuracy.append(model.score(task.test_x, task.test_y))
        severity = _severities(model, task)
        for name, sev in severity.items():
            state.history[name].append((labels_from[name], int(np.count_nonzero(sev > 0))))
        if len(accuracy) > rounds:
            break
        picked = _pick_round(strategy, state, model, severity, task, per_round, rng)
        labels_from = {name: int(np.count_nonzero(sev[picked] > 0)) for name, sev in severity.items()}
        state.labelled[picked] = True
    return np.array(accuracy), state


def active_learning_curves(
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    rounds: int = 10,
    initial: int = 50,
    per_round: int = 50,
    strategies: Sequence[str] = STRATEGIES,
) -> dict[str, dict[str, np.ndarray]]:
    """Per strategy: "accuracy" (seeds x rounds+1; column 0 is the start), "topped_up" (per seed)
    and "flagged_labels" (seeds x assertions, in ASSERTIONS order: labels drawn from rows each
    assertion flagged when they were chosen; a row flagged by several counts for each).

    Every strategy of a seed shares the split and the initial labels (same seed), so differences are
    the choice of rows alone.
    """
    out: dict[str, dict[str, list]] = {
        s: {"accuracy": [], "topped_up": [], "flagged_labels": []} for s in strategies
    }
    for seed in seeds:
        task = digits_task(seed)
        for strategy in strategies:
            acc, state = run_strategy(task, strategy, seed, rounds, initial, per_round)
            out[strategy]["accuracy"].append(acc)
            out[strategy]["topped_up"].append(state.topped_up)
            out[strategy]["flagged_labels"].append([sum(n for n, _ in state.history[a]) for a in ASSERTIONS])
    return {s: {k: np.array(v) for k, v in d.items()} for s, d in out.items()}


def compared_mean(accuracy: np.ndarray) -> np.ndarray:
    """Per seed: mean accuracy over rounds FIRST_COMPARED_ROUND..last (column r = after round r)."""
    return accuracy[:, FIRST_COMPARED_ROUND:].mean(axis=1)


def report_al(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    seeds = tuple(range(args.seeds))
    curves = active_learning_curves(seeds, args.rounds, args.initial, args.per_round)
    print(
        f"\n== Active learning: digits, LogisticRegression, {args.initial} initial labels, "
        f"{args.per_round} per round, {args.rounds} rounds, {len(seeds)} seeds =="
    )
    labels = [args.initial + r * args.per_round for r in range(args.rounds + 1)]
    span = f"mean {FIRST_COMPARED_ROUND}..{args.rounds}"
    print(f"{'labels':>14} " + " ".join(f"{n:>6}" for n in labels) + f"  {span:>9}  topped up")
    for strategy, d in curves.items():
        mean = d["accuracy"].mean(axis=0)
        print(
            f"{strategy:>14} "
            + " ".join(f"{a:6.3f}" for a in mean)
            + f"  {compared_mean(d['accuracy']).mean():9.4f}  {int(d['topped_up'].sum())}"
        )
    _report_flagged_labels(curves, args.rounds * args.per_round * len(seeds))
    bal, rnd = compared_mean(curves["bal"]["accuracy"]), compared_mean(curves["random"]["accuracy"])
    wins = int(np.count_nonzero(bal > rnd))
    verdict = "MET" if bal.mean() > rnd.mean() else "MISSED"
    print(
        f"{verdict}: BAL > random (mean accuracy over rounds {FIRST_COMPARED_ROUND}..{args.rounds}): "
        f"{bal.mean():.4f} vs {rnd.mean():.4f} ({bal.mean() - rnd.mean():+.4f}; BAL ahead on "
        f"{wins}/{len(seeds)} seeds)"
    )
    if "uncertainty" in curves:
        unc = compared_mean(curves["uncertainty"]["accuracy"])
        print(
            f"(for reference, BAL vs uncertainty: {bal.mean() - unc.mean():+.4f}; BAL ahead on "
            f"{int(np.count_nonzero(bal > unc))}/{len(seeds)} seeds)"
        )
    print(f"({time.perf_counter() - started:.1f} s)")


def _report_flagged_labels(curves: dict[str, dict[str, np.ndarray]], labels: int) -> None:
    """Share of the labels each strategy drew from rows each assertion flagged at the time."""
    print("share of labels on rows flagged by: " + ", ".join(ASSERTIONS))
    for strategy, d in curves.items():
        shares = d["flagged_labels"].sum(axis=0) / labels
        print(f"{strategy:>14} " + " ".join(f"{s:6.1%}" for s in shares))


# Sections of the benchmark, run in this order; add one by adding its reporter here.
SECTIONS: dict[str, Callable[[argparse.Namespace], None]] = {"al": report_al}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    parser.add_argument("--seeds", type=int, default=5, help="AL: seeds 0..N-1")
    parser.add_argument("--rounds", type=int, default=10, help="AL: labelling rounds")
    parser.add_argument("--initial", type=int, default=50, help="AL: labelled rows at the start")
    parser.add_argument("--per-round", type=int, default=50, help="AL: labels per round")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    for name, report in SECTIONS.items():
        if args.section in (name, "all"):
            report(args)


if __name__ == "__main__":
    main()
