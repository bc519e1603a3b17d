"""Benchmark of model assertions, by seeded trials: what they find in the video demo, check time
vs rows, and choosing what to label next (active learning).

    .venv/bin/python bench/bench_assertions.py                  # every section
    .venv/bin/python bench/bench_assertions.py --section al     # active-learning curves only
    .venv/bin/python bench/bench_assertions.py --section al --seeds 3 --rounds 5
    .venv/bin/python bench/bench_assertions.py --section tpr --video-seeds 3 --frames 2000
    .venv/bin/python bench/bench_assertions.py --section scale --sizes 500,1000,2000,4000

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

The video sections run the assertions of ``server.demo_video`` through one live SieveDB server
(embedded PostgreSQL, ``--inference-workers 1``, in a temporary directory): each world (a seed and
a frame count, ``server.demo_video.generate``) is installed with the demo's own installer after the
previous world's tables, views and assertions are dropped; each assertion is created with CREATE
ASSERTION and evaluated with ``SELECT sieve.check_assertion(name)``; its flags are read back from
``sieve.violations``. The detector's model calls are the sum of ``sieve.query_log.model_calls
->> 'detect_objects'`` over the rows the check logged; check time is the wall time of the
``check_assertion`` statement seen by the client.

Assertion quality ("tpr"): ``--video-seeds`` worlds (seeds 12, 13, ...) of ``--frames`` frames.
Before each assertion the detector's cache is cleared (``sieve.clear_cache``), so each check pays
for its own model run. Per assertion, pooled over the worlds: TPR (share of the injected errors of
its kind whose key it flags) and the lowest world's TPR, precision (strict: a flag counts only when
it names an injected error of the assertion's own kind, as tests/support/assertion_video.py scores
it), flags, and mean check seconds. For the learned ``odd_boxes`` (severity ranks every box it
scores) also recall at k = 2n, n its world's injected wrong sizes, and what a random ranking finds.
Lines "MET/MISSED: TPR >= 0.88" for flicker, multibox and phantom: MET when every world meets it.

Check time vs rows ("scale"): one world (seed 12) per size in ``--sizes``; each assertion checked
cold (the detector's cache cleared first: the check runs the detector over the frames it reads)
and then warm (checked again at once: every output cached), ``--repeats`` times; seconds are the
median. Printed: seconds and detector calls of each, the ratio warm/cold of the seconds, and per
size the totals over the four assertions. In both sections the first world's assertions are checked
once, unmeasured, before the figures are taken, so the server's start-up costs (imports, first
plans) are not charged to the first checks.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sampling.active import Candidate, choose_labels  # noqa: E402
from server.demo_video import ASSERTIONS as VIDEO_ASSERTIONS  # noqa: E402
from server.demo_video import SEED as VIDEO_SEED  # noqa: E402
from server.demo_video import VideoWorld, generate  # noqa: E402
from tests.support import assertion_video as av  # noqa: E402
from tests.support.servers import SieveProcess  # noqa: E402

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


# -- the video demo through a live server ----------------------------------------------------------

DETECTOR = "detect_objects"
CONSISTENCY = ("flicker", "multibox", "phantom")
LEARNED = "odd_boxes"
TPR_TARGET = 0.88  # the lowest true-positive rate the paper reports for its assertions
RESET = (
    "DROP VIEW IF EXISTS car_counts",
    "DROP VIEW IF EXISTS detections",
    "DROP TABLE IF EXISTS frames, demo_injected_errors",
)


@dataclass(frozen=True)
class Check:
    """One ``sieve.check_assertion`` call: its count, wall seconds and the detector's model calls."""

    count: int
    seconds: float
    calls: int


class VideoServer:
    """One SieveDB server in a temporary directory, holding one demo world at a time."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="sievedb-bench-assertions-"))
        self.tmp.chmod(0o755)  # under root the embedded Postgres runs as 'pgserver' and must traverse it
        self.models_dir = self.tmp / "models"
        self.models_dir.mkdir()
        self.server = SieveProcess(
            data_dir=self.tmp / "sieve" / "data",
            extra_args=["--models-dir", str(self.models_dir), "--inference-workers", "1"],
        )
        self.conn: psycopg.Connection | None = None

    def __enter__(self) -> VideoServer:
        self.server.start()
        # Never prepared: psycopg prepares a statement run 5 times, and a prepared
        # sieve.check_assertion reaches Postgres instead of SieveDB (0A000).
        self.conn = psycopg.connect(self.server.dsn(), autocommit=True, prepare_threshold=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def load(self, world: VideoWorld) -> None:
        """Replace the world the server holds, and create the demo's assertions over it."""
        for name in VIDEO_ASSERTIONS:
            self.conn.execute(f"DROP ASSERTION IF EXISTS {name}")
        for sql in RESET:
            self.conn.execute(sql)
        av.install(self.server.dsn(), self.models_dir, world)
        for ddl in VIDEO_ASSERTIONS.values():
            self.conn.execute(ddl)

    def clear_detector(self) -> None:
        self.conn.execute(f"SELECT sieve.clear_cache('{DETECTOR}')")

    def check(self, name: str) -> Check:
        before = self.conn.execute("SELECT coalesce(max(query_id), 0) FROM sieve.query_log").fetchone()[0]
        started = time.perf_counter()
        # check_assertion takes a string literal, not a bound parameter
        (count,) = self.conn.execute(f"SELECT sieve.check_assertion('{name}')").fetchone()
        seconds = time.perf_counter() - started
        (calls,) = self.conn.execute(
            "SELECT coalesce(sum((model_calls ->> %s)::bigint), 0) FROM sieve.query_log WHERE query_id > %s",
            (DETECTOR, before),
        ).fetchone()
        return Check(int(count), seconds, int(calls))

    def flagged(self, name: str) -> list[tuple]:
        """The assertion's flagged keys, highest severity first."""
        rows = self.conn.execute(
            "SELECT key FROM sieve.violations WHERE assertion = %s ORDER BY severity DESC", (name,)
        ).fetchall()
        return [av.key_of(name, key) for (key,) in rows]


@dataclass
class Quality:
    """One assertion's figures over the worlds of the tpr section (lists: one entry per world)."""

    scores: list[av.Score]
    seconds: list[float]
    recall_2n: list[float]
    chance_2n: list[float]

    def pooled(self) -> av.Score:
        return av.Score(*(sum(getattr(s, f) for s in self.scores) for f in ("injected", "flagged", "found")))


def assertion_quality(server: VideoServer, worlds: Sequence[VideoWorld]) -> dict[str, Quality]:
    out = {name: Quality([], [], [], []) for name in VIDEO_ASSERTIONS}
    for i, world in enumerate(worlds):
        server.load(world)
        if i == 0:
            cold_and_warm(server)  # not measured: the server's first checks pay its start-up costs
        for name, q in out.items():
            server.clear_detector()  # each check pays for its own detector run
            check = server.check(name)
            flags = server.flagged(name)
            truth = av.injected(world, name)
            q.scores.append(av.score(flags, truth))
            q.seconds.append(check.seconds)
            if name == LEARNED:
                k = 2 * len(truth)
                q.recall_2n.append(av.recall_at(flags, truth, k))
                q.chance_2n.append(k / len(world.detections))
    return out


def report_tpr(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    seeds = [VIDEO_SEED + i for i in range(args.video_seeds)]
    worlds = [generate(args.frames, seed) for seed in seeds]
    with VideoServer() as server:
        quality = assertion_quality(server, worlds)
    print(
        f"\n== Assertion quality: the demo video, {len(worlds)} worlds (seeds {seeds[0]}..{seeds[-1]}) x "
        f"{args.frames} frames, through sieve.check_assertion (detector cache cleared before each) =="
    )
    print(
        f"{'assertion':>10} {'injected':>8} {'flagged':>7} {'found':>5} {'TPR':>6} {'min TPR':>7} "
        f"{'precision':>9} {'check s':>7}"
    )
    for name, q in quality.items():
        p = q.pooled()
        print(
            f"{name:>10} {p.injected:8d} {p.flagged:7d} {p.found:5d} {p.tpr:6.3f} "
            f"{min(s.tpr for s in q.scores):7.3f} {p.precision:9.3f} {np.mean(q.seconds):7.2f}"
        )
    learned = quality[LEARNED]
    print(
        f"{LEARNED}: recall at k = 2n {np.mean(learned.recall_2n):.3f} (per world "
        + ", ".join(f"{r:.3f}" for r in learned.recall_2n)
        + f"; a random ranking {np.mean(learned.chance_2n):.3f})"
    )
    for name in CONSISTENCY:
        lowest = min(s.tpr for s in quality[name].scores)
        verdict = "MET" if lowest >= TPR_TARGET else "MISSED"
        print(
            f"{verdict}: {name} TPR >= {TPR_TARGET} in every world (lowest {lowest:.3f}, "
            f"pooled {quality[name].pooled().tpr:.3f})"
        )
    print(f"({time.perf_counter() - started:.1f} s)")


def cold_and_warm(server: VideoServer, repeats: int = 1) -> dict[str, tuple[Check, Check]]:
    """Each assertion checked with the detector's cache cleared, then again at once; with several
    repeats, the median seconds of each (the counts and calls are those of the last repeat)."""
    out = {}
    for name in VIDEO_ASSERTIONS:
        runs = []
        for _ in range(repeats):
            server.clear_detector()
            runs.append((server.check(name), server.check(name)))
        out[name] = tuple(_median_check([r[i] for r in runs]) for i in (0, 1))
    return out


def _median_check(checks: list[Check]) -> Check:
    return Check(checks[-1].count, float(np.median([c.seconds for c in checks])), checks[-1].calls)


def report_scale(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    sizes = [int(n) for n in args.sizes.split(",")]
    print(
        f"\n== Check time vs rows: the demo video (seed {VIDEO_SEED}), each assertion cold "
        "(detector cache cleared) then warm (checked again) =="
    )
    print(
        f"{'frames':>6} {'boxes':>6} {'assertion':>10} {'count':>5} {'cold s':>7} {'cold calls':>10} "
        f"{'warm s':>7} {'warm calls':>10} {'warm/cold':>9}"
    )
    totals: dict[int, tuple[float, float]] = {}  # frames -> (cold, warm) seconds of all four
    with VideoServer() as server:
        for n in sizes:
            world = generate(n, VIDEO_SEED)
            server.load(world)
            if n == sizes[0]:
                cold_and_warm(server)  # not measured: the server's first checks pay its start-up costs
            checks = cold_and_warm(server, args.repeats)
            for name, (cold, warm) in checks.items():
                _print_scale_row(n, len(world.detections), name, cold, warm)
            total = (
                Check(0, *_sums(c for c, _ in checks.values())),
                Check(0, *_sums(w for _, w in checks.values())),
            )
            totals[n] = (total[0].seconds, total[1].seconds)
            print(
                f"{n:6d} {len(world.detections):6d} {'all four':>10} {'':>5} {total[0].seconds:7.2f} "
                f"{total[0].calls:10d} {total[1].seconds:7.2f} {total[1].calls:10d} "
                f"{total[1].seconds / total[0].seconds:9.2f}"
            )
    _report_scale_summary(totals)
    print(f"({time.perf_counter() - started:.1f} s)")


def _sums(checks) -> tuple[float, int]:
    checks = list(checks)
    return sum(c.seconds for c in checks), sum(c.calls for c in checks)


def _report_scale_summary(totals: dict[int, tuple[float, float]]) -> None:
    """Warm/cold over every size, and how the cold time grows with the frames."""
    cold = sum(c for c, _ in totals.values())
    warm = sum(w for _, w in totals.values())
    print(f"warm/cold (all sizes, all four assertions): {warm / cold:.2f}")
    (n0, (c0, _)), (n1, (c1, _)) = min(totals.items()), max(totals.items())
    if n1 > n0:
        print(f"cold seconds {n0} -> {n1} frames ({n1 / n0:.0f}x rows): {c1 / c0:.1f}x")


def _print_scale_row(frames: int, boxes: int, name: str, cold: Check, warm: Check) -> None:
    print(
        f"{frames:6d} {boxes:6d} {name:>10} {cold.count:5d} {cold.seconds:7.2f} {cold.calls:10d} "
        f"{warm.seconds:7.2f} {warm.calls:10d} {warm.seconds / cold.seconds:9.2f}"
    )


# Sections of the benchmark, run in this order; add one by adding its reporter here.
SECTIONS: dict[str, Callable[[argparse.Namespace], None]] = {
    "al": report_al,
    "tpr": report_tpr,
    "scale": report_scale,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    parser.add_argument("--seeds", type=int, default=5, help="AL: seeds 0..N-1")
    parser.add_argument("--rounds", type=int, default=10, help="AL: labelling rounds")
    parser.add_argument("--initial", type=int, default=50, help="AL: labelled rows at the start")
    parser.add_argument("--per-round", type=int, default=50, help="AL: labels per round")
    parser.add_argument("--video-seeds", type=int, default=3, help="tpr: worlds (seeds 12, 13, ...)")
    parser.add_argument("--frames", type=int, default=2000, help="tpr: frames per world")
    parser.add_argument("--sizes", default="500,1000,2000,4000", help="scale: frame counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="scale: median seconds over this many checks")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    for name, report in SECTIONS.items():
        if args.section in (name, "all"):
            report(args)


if __name__ == "__main__":
    main()
