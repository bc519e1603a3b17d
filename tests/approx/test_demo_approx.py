"""Approximate queries end to end on the ``make run`` demo's views (digit_predictions,
review_sentiment), through PostgreSQL 18's psql and through psycopg.

Each query runs on the demo server with a fixed ``sieve.seed`` through both clients (the same seed
gives the same answer, whichever client sends it) and is checked against the exact answer the same
server gives without the clause:

* RECALL / PRECISION TARGET: the target holds for the seed; the answer is the oracle-verified
  positives plus the rows above one proxy threshold: below the lowest-proxy false positive only true
  positives come back, and above it only verified negatives (at most BUDGET rows) are left out.
* ERROR TARGET with GROUP BY and ``SET sieve.bounds = on``: every group's interval holds the exact
  value and the estimate lies within the interval's width of it. The guarantee allows a 5% miss
  rate per query; the seeds here are ones where it holds.
* The NOTICE names the target, the confidence and the oracle calls; sieve.query_log records target,
  confidence, estimate and interval; no query labels more rows than its BUDGET.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.support.servers import SieveProcess
from tests.test_demo import REVIEWS_CSV, start_demo_server

needs_reviews = pytest.mark.skipif(
    not REVIEWS_CSV.exists(), reason=f"{REVIEWS_CSV} is absent: the demo has no reviews table"
)

LOG = (
    "select mode, target, confidence, estimate, ci_low, ci_high, model_calls from sieve.query_log "
    "order by query_id desc limit 1"
)
LABELLED = re.compile(r"(\d+) rows labelled \((\d+) model calls\) of budget (\d+)")


@dataclass
class Selection:
    """One view's selection workload: the SQL pieces, the oracle and the exact answer."""

    view: str
    key: str
    predicate: str  # the model predicate, on a view column
    proxy: str  # a view column
    oracle: str  # the model behind the predicate
    truth: set = field(default_factory=set)  # keys satisfying the predicate (exact)
    score: dict = field(default_factory=dict)  # key -> proxy score

    def query(self, target: str, budget: int) -> str:
        return (
            f"SELECT {self.key} FROM {self.view} WHERE {self.predicate} {target} CONFIDENCE 95% "
            f"BUDGET {budget} USING PROXY {self.proxy}"
        )


DIGITS = Selection("digit_predictions", "id", "digit = 7", "p7", "digit_oracle")
REVIEWS = Selection("review_sentiment", "review_id", "negative = 1", "p_negative", "is_negative")


@dataclass
class Answer:
    rows: list[tuple]
    notices: list[str]
    log: tuple


class DemoClients:
    def __init__(self, server: SieveProcess, psql_bin: Path) -> None:
        self.server = server
        self.psql_bin = psql_bin
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.env.update(PSQLRC=os.devnull, LC_ALL="C.UTF-8", LANG="C.UTF-8", PGCONNECT_TIMEOUT="10")

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(), autocommit=True, prepare_threshold=None)

    def psycopg(self, sql: str, *settings: str) -> Answer:
        notices: list[str] = []
        with self.connect() as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            for setting in settings:
                conn.execute(setting)
            rows = conn.execute(sql).fetchall()
            log = conn.execute(LOG).fetchone()
        return Answer([tuple(_text(v) for v in r) for r in rows], notices, log)

    def psql(self, sql: str, *settings: str) -> Answer:
        """One psql session: the settings, the query and the log row, each its own ``-c``."""
        commands = [a for s in (*settings, sql, LOG) for a in ("-c", s)]
        cmd = [str(self.psql_bin / "psql"), "-X", "-q", "-At", "-F", "|", "-v", "ON_ERROR_STOP=1"]
        cmd += ["-h", self.server.host, "-p", str(self.server.port), "-U", "postgres", "-d", "postgres"]
        done = subprocess.run(cmd + commands, capture_output=True, text=True, env=self.env, timeout=60)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        *rows, log = [tuple(None if v == "" else v for v in line.split("|")) for line in lines]
        notices = [
            n.removeprefix("NOTICE:").strip() for n in done.stderr.splitlines() if n.startswith("NOTICE:")
        ]
        mode, target, confidence, estimate, ci_low, ci_high, calls = log
        parsed = (mode, _float(target), _float(confidence), _float(estimate), _float(ci_low), _float(ci_high))
        return Answer(rows, notices, (*parsed, json.loads(calls)))

    def exact(self, sql: str) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(sql).fetchall()


def _text(value) -> str | None:
    """psql prints text; psycopg's values in the same shape."""
    return None if value is None else str(value)


def _values(row: tuple) -> tuple:
    """A row comparable across clients (psql prints 0.0 as 0)."""
    out = []
    for v in row:
        try:
            out.append((0, float(v), ""))
        except (TypeError, ValueError):
            out.append((1, 0.0, "" if v is None else v))
    return tuple(out)


def _float(text: str | None) -> float | None:
    return None if text is None else float(text)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, pg_bin: Path) -> Iterator[DemoClients]:
    root = tmp_path_factory.mktemp("demo-approx")
    server = SieveProcess(
        data_dir=root / "data",
        extra_args=["--demo", "--models-dir", str(root / "models"), "--inference-workers", "1"],
    )
    try:
        start_demo_server(server)
        yield DemoClients(server, pg_bin)
    finally:
        server.stop()


def _labelled(notice: str) -> tuple[int, int, int]:
    found = LABELLED.search(notice)
    assert found, notice
    return tuple(int(v) for v in found.groups())


def check_selection(
    work: Selection, answer: Answer, mode: str, value: float, budget: int
) -> tuple[float, float]:
    """The answer against the exact one: (precision, recall); asserts the structure and the budget."""
    returned = {int(r[0]) for r in answer.rows}
    assert len(returned) == len(answer.rows)  # no row twice
    hits = returned & work.truth
    precision = len(hits) / len(returned) if returned else 1.0
    recall = len(hits) / len(work.truth)
    # verified positives plus the rows above one threshold: the lowest-proxy false positive
    false = returned - work.truth
    if false:
        tau = min(work.score[k] for k in false)
        above = {k for k, s in work.score.items() if s >= tau}
        left_out = above - returned
        assert not left_out & work.truth, "a true positive above the threshold is missing"
        assert len(left_out) <= budget  # only verified negatives are dropped
    # NOTICE: target, confidence, oracle calls within the budget
    notice = next(n for n in answer.notices if n.startswith("approximate selection"))
    assert f"{mode} target {value:.0%} at confidence 95%" in notice, notice
    assert f"{len(returned)} of {len(work.score)} rows returned" in notice, notice
    labelled, _, said_budget = _labelled(notice)
    assert labelled <= budget == said_budget, notice
    # sieve.query_log: the target, the confidence, the estimate and the certified lower bound
    logged_mode, logged_target, confidence, estimate, ci_low, _, calls = answer.log
    assert (logged_mode, logged_target, confidence) == (mode, pytest.approx(value), pytest.approx(0.95))
    assert estimate is not None and 0.0 <= estimate <= 1.0
    assert ci_low is not None and ci_low >= value
    assert calls.get(work.oracle, 0) <= budget, calls
    return precision, recall


def check_groups(answer: Answer, exact: dict, budget: int, target: float) -> None:
    """(group, estimate, low, high) rows against the exact per-group values."""
    assert {r[0] for r in answer.rows} == set(exact)
    for group, estimate, low, high in answer.rows:
        estimate, low, high, truth = float(estimate), float(low), float(high), float(exact[group])
        assert low <= truth <= high, (group, low, truth, high)
        assert abs(estimate - truth) <= high - low, (group, estimate, truth)
    notice = next(n for n in answer.notices if n.startswith("approximate COUNT"))
    assert f"error target {target:.0%} at confidence 95%" in notice, notice
    labelled, _, said_budget = _labelled(notice)
    assert labelled <= budget == said_budget, notice
    mode, logged_target, confidence, *_ = answer.log
    assert (mode, logged_target, confidence) == ("approx_count", pytest.approx(target), pytest.approx(0.95))


def run_both(demo: DemoClients, sql: str, *settings: str) -> Answer:
    """psycopg, then psql with the same settings: the same rows either way."""
    first = demo.psycopg(sql, *settings)
    second = demo.psql(sql, *settings)
    assert sorted(map(_values, second.rows)) == sorted(map(_values, first.rows))
    assert second.log[:6] == pytest.approx(first.log[:6])
    return second


def load_truth(demo: DemoClients, work: Selection) -> None:
    """The exact answer from the same server: every row's model output and proxy score."""
    rows = demo.exact(f"SELECT {work.key}, ({work.predicate}), {work.proxy} FROM {work.view}")
    work.truth = {k for k, hit, _ in rows if hit}
    work.score = {k: float(s) for k, _, s in rows}


def selections(demo: DemoClients, work: Selection, rt: tuple[int, int], pt: tuple[int, int]) -> None:
    """RT 90% and PT 90%, each ``(seed, budget)``, through both clients; then checked."""
    answers = {}
    for name, phrase, (seed, budget) in (
        ("recall", "RECALL TARGET 90%", rt),
        ("precision", "PRECISION TARGET 90%", pt),
    ):
        answers[name] = (run_both(demo, work.query(phrase, budget), f"set sieve.seed = {seed}"), budget)
    load_truth(demo, work)  # after the approximate queries: their oracle calls ran on a cold cache
    precision_rt, recall_rt = check_selection(work, answers["recall"][0], "recall", 0.9, answers["recall"][1])
    precision_pt, recall_pt = check_selection(
        work, answers["precision"][0], "precision", 0.9, answers["precision"][1]
    )
    print(
        f"\n{work.view}: {len(work.truth)} positives of {len(work.score)}; "
        f"RT90 precision {precision_rt:.3f} recall {recall_rt:.3f} ({len(answers['recall'][0].rows)} rows); "
        f"PT90 precision {precision_pt:.3f} recall {recall_pt:.3f} ({len(answers['precision'][0].rows)} rows)"
    )
    assert recall_rt >= 0.9 and precision_pt >= 0.9
    assert precision_rt >= 0.5 and recall_pt >= 0.5  # useful answers, not every row / no row


def test_digit_predictions_recall_and_precision_targets(demo):
    selections(demo, DIGITS, rt=(1, 500), pt=(2, 500))


@needs_reviews
def test_review_sentiment_recall_and_precision_targets(demo):
    selections(demo, REVIEWS, rt=(3, 1000), pt=(4, 1000))


def test_digit_predictions_grouped_count_intervals_hold_the_exact_counts(demo):
    """Correct predictions per true label: ten groups of about 180 rows, most of them positive."""
    exact_sql = (
        "SELECT true_label, COUNT(*) FROM digit_predictions WHERE digit = true_label GROUP BY true_label"
    )
    sql = f"{exact_sql} ERROR TARGET 10% CONFIDENCE 95% BUDGET 1000"  # no proxy: uniform sampling
    answer = run_both(demo, sql, "set sieve.seed = 5", "set sieve.bounds = on")
    check_groups(answer, {str(g): n for g, n in demo.exact(exact_sql)}, 1000, 0.10)
    assert len(answer.rows) == 10


@needs_reviews
def test_review_sentiment_grouped_count_by_category(demo):
    exact_sql = "SELECT category, COUNT(*) FROM review_sentiment WHERE negative = 1 GROUP BY category"
    sql = f"{exact_sql} ERROR TARGET 10% CONFIDENCE 95% BUDGET 2000 USING PROXY p_negative"
    answer = run_both(demo, sql, "set sieve.seed = 6", "set sieve.bounds = on")
    exact = demo.exact(exact_sql)
    check_groups(answer, dict(exact), 2000, 0.10)
    print(f"\nreview_sentiment COUNT by category: {answer.rows} vs exact {sorted(exact)}")


def test_an_ungrouped_count_logs_its_estimate_and_interval(demo):
    sql = (
        "SELECT COUNT(*) FROM digit_predictions WHERE digit = 7 ERROR TARGET 10% CONFIDENCE 95% "
        "BUDGET 500 USING PROXY p7"
    )
    answer = run_both(demo, sql, "set sieve.seed = 7", "set sieve.bounds = on")
    ((estimate, low, high),) = answer.rows
    mode, target, confidence, logged, ci_low, ci_high, calls = answer.log
    assert (mode, target, confidence) == ("approx_count", pytest.approx(0.1), pytest.approx(0.95))
    assert (ci_low, ci_high) == pytest.approx((float(low), float(high)), rel=1e-6)
    assert abs(logged - int(estimate)) <= 0.5  # COUNT(*) comes back as a bigint, the log has the estimate
    (truth,) = demo.exact("SELECT COUNT(*) FROM digit_predictions WHERE digit = 7")[0]
    assert ci_low <= truth <= ci_high
    assert calls.get("digit_oracle", 0) <= 500
    notice = next(n for n in answer.notices if n.startswith("approximate COUNT"))
    assert "error target 10% at confidence 95%" in notice and "interval [" in notice
    assert _labelled(notice)[0] <= 500
