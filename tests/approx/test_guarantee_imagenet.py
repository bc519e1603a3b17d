"""The precision and recall guarantees through SQL on real data: SUPG's ImageNet file (50,000 images, 50
positives, the shipped proxy scores), the oracle an ONNX model that reveals the human label.

Each mode runs N_TRIALS seeded ``... CONFIDENCE 95% BUDGET 1000 USING PROXY proxy_score`` queries:
``RECALL TARGET 90%`` (RT), ``PRECISION TARGET 95%`` (PT) and the cascade ``RECALL TARGET 90%
PRECISION TARGET 90%`` (a trial succeeds when both hold). The guarantee says P(success) >= 95% (δ =
5%), so the number of successes in n independent trials is stochastically at least Binomial(n, 0.95);
the test accepts anything at or above that distribution's 0.1% quantile (87 of 100: a correct
implementation fails it at most 1 time in 1000). The tolerance is one-sided on purpose: a bound may
be conservative, so 100/100 is no failure. Each mode must also be useful, not trivially correct
(returning every row meets any recall target): SUPG reports a mean precision of 0.79 for RT on this
file, and a precision target is useless when it returns few of the positives.

The default bound (``sieve.bound = 'empirical'``) is empirical Bernstein with the range read off the
sample. With a finite-sample bound (``'betting'``) budget 1000 cannot certify any proxy threshold for
50 positives in 50,000 rows, and RT returns every row, which the NOTICE says.

A proxy with a blind spot (the issue's adversarial proxy): the column ``blind_score`` is
``proxy_score`` except that 10 of the 50 positives get scores from the lowest tenth of the
negatives'. "Certified" must hold on any data, this proxy included: a trial whose
``sieve.query_log.certified`` is true and whose recall is below the target is a broken promise.
For a valid bound P(certified and missed) <= δ, so over n independent trials the number of kept
promises (not certified, or met) is stochastically at least Binomial(n, 0.95); the test accepts
anything at or above its 0.1% quantile. Conditioning on "certified" instead would test a claim
the contract does not make (a valid rule may certify rarely, and then mostly when it is wrong).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.stats import binom

from tests.inference.models import OPSET, save

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "supg" / "imagenet.csv"
N_ROWS = 50_000
BUDGET = 1000
CONFIDENCE = 0.95
N_TRIALS = 100
QUERY = (
    "SELECT id FROM imagenet WHERE reveal(x) > 0.5 {target} CONFIDENCE 95% BUDGET 1000 "
    "USING PROXY proxy_score"
)
RT = QUERY.format(target="RECALL TARGET 90%")
PT = QUERY.format(target="PRECISION TARGET 95%")
CASCADE = QUERY.format(target="RECALL TARGET 90% PRECISION TARGET 90%")
BLIND_RT = RT.replace("USING PROXY proxy_score", "USING PROXY blind_score")
N_BLIND = 10  # positives the adversarial proxy cannot see
# one round trip per trial for the log: what the query recorded and what it spent
LOG = (
    "select mode, target, confidence, model_calls, cache_hits from sieve.query_log "
    "order by query_id desc limit 1"
)

pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} is absent (the shared data sets)")


def reveal_model(out_dir: Path) -> Path:
    """x [N, 2] = (label, id) -> x[:, 0]. The id only makes every row's input (and cache key)
    distinct, so each labelled row is one model input, as with real images."""
    zero = numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["x", "zero"], ["label"], axis=1)],
        "reveal",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("label", TensorProto.FLOAT, ["N"])],
        [zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return save(model, out_dir / "reveal.onnx")


def blind_scores(rows: list[tuple[int, bool, float]], seed: int = 11) -> dict[int, float]:
    """The adversarial proxy: each row's score, except that N_BLIND positives (a seeded choice)
    get scores drawn from the lowest tenth of the negatives' scores."""
    rng = np.random.default_rng(seed)
    positives = [i for i, label, _ in rows if label]
    negatives = np.sort([score for _, label, score in rows if not label])
    hidden = rng.choice(positives, size=N_BLIND, replace=False)
    low = rng.choice(negatives[: negatives.size // 10], size=N_BLIND, replace=False)
    scores = {i: score for i, _, score in rows}
    scores.update(zip(hidden.tolist(), low.tolist(), strict=True))
    return scores


@pytest.fixture(scope="module")
def imagenet(approx_world):
    with DATA.open() as f:
        rows = [(int(r["id"]), r["label"] == "True", float(r["proxy_score"])) for r in csv.DictReader(f)]
    blind = blind_scores(rows)
    reveal_model(approx_world.models_dir)
    with approx_world.connect() as conn:
        conn.execute("drop table if exists imagenet")
        conn.execute(
            "create table imagenet (id int primary key, x real[], proxy_score float8, blind_score float8)"
        )
        with conn.cursor().copy("copy imagenet (id, x, proxy_score, blind_score) from stdin") as copy:
            for i, label, score in rows:
                copy.write_row((i, [1.0 if label else 0.0, float(i)], score, blind[i]))
        conn.execute("analyze imagenet")
        conn.execute(
            "create or replace function reveal(x real[]) returns real language onnx as 'reveal.onnx'"
        )
    truth = {i for i, label, _ in rows if label}
    assert len(rows) == N_ROWS and len(truth) == 50
    return truth


def run_trial(conn, sql: str, seed: int) -> tuple[set[int], tuple]:
    """One seeded query: the returned ids and its sieve.query_log row. Three round trips."""
    conn.execute(f"set sieve.seed = {seed}")
    ids = {r[0] for r in conn.execute(sql).fetchall()}
    return ids, conn.execute(LOG).fetchone()


def spent(logged: tuple) -> int:
    """Oracle labels the query used, computed or served by the model cache."""
    _, _, _, calls, hits = logged
    return calls.get("reveal", 0) + hits


@pytest.mark.parametrize(
    ("sql", "mode", "recall_target", "precision_target"),
    [
        pytest.param(RT, "recall", 0.90, None, id="RT90"),
        pytest.param(PT, "precision", None, 0.95, id="PT95"),
        pytest.param(CASCADE, "cascade", 0.90, 0.90, id="cascade90-90"),
    ],
)
def test_the_target_holds_over_seeded_trials(
    approx_world, imagenet, sql, mode, recall_target, precision_target
):
    truth = imagenet
    met, precisions, recalls, sizes, budgets = 0, [], [], [], []
    started = time.monotonic()
    # prepare_threshold=None: psycopg prepares a statement run 5 times (extended protocol), and
    # approximate clauses need the simple query protocol
    with approx_world.connect(prepare_threshold=None) as conn:
        for n in range(N_TRIALS):
            ids, logged = run_trial(conn, sql, seed=1000 + n)
            assert logged[:3] == (mode, recall_target or precision_target, CONFIDENCE), logged
            budgets.append(spent(logged))
            assert budgets[-1] <= BUDGET, (n, logged)
            hits = len(ids & truth)
            precision = hits / len(ids) if ids else 1.0
            recall = hits / len(truth)
            precisions.append(precision)
            recalls.append(recall)
            sizes.append(len(ids))
            met += (recall_target is None or recall >= recall_target) and (
                precision_target is None or precision >= precision_target
            )
    elapsed = time.monotonic() - started
    floor = int(binom.ppf(0.001, N_TRIALS, CONFIDENCE))
    mean_p, mean_r = float(np.mean(precisions)), float(np.mean(recalls))
    print(
        f"\n{mode} on imagenet: {met}/{N_TRIALS} trials met the target (floor {floor}) in {elapsed:.1f} s; "
        f"mean precision {mean_p:.3f}, mean recall {mean_r:.3f}, median rows {int(np.median(sizes))}, "
        f"labels per trial <= {max(budgets)}"
    )
    assert met >= floor, (met, N_TRIALS, floor)
    # useful, not a trivially correct answer
    if recall_target is not None:
        assert mean_p >= 0.79, f"{mode}: mean precision {mean_p:.3f} (median {np.median(sizes)} rows)"
    if precision_target is not None:
        assert mean_r >= 0.9, f"{mode}: mean recall {mean_r:.3f}"


def test_a_finite_sample_recall_target_returns_every_row_and_says_so(approx_world, imagenet):
    """``sieve.bound = 'betting'``: valid whatever the data, and at budget 1000 it can only certify
    recall 90% by returning every row (minus the verified negatives)."""
    notices: list[str] = []
    with approx_world.connect(prepare_threshold=None) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("set sieve.bound = 'betting'")
        ids, logged = run_trial(conn, RT, seed=7)
        conn.execute("reset sieve.bound")
    assert logged[:3] == ("recall", 0.9, CONFIDENCE)
    assert spent(logged) <= BUDGET, logged
    assert imagenet <= ids  # recall 1
    assert len(ids) >= N_ROWS - BUDGET  # every row but the verified negatives
    notice = next(n for n in notices if n.startswith("approximate selection"))
    print(f"\nbetting RT on imagenet: {len(ids)} rows, NOTICE: {notice}")
    assert "recall target 90%" in notice and "confidence 95%" in notice, notice
    assert f"{len(ids)} of {N_ROWS} rows returned" in notice, notice
    assert "every row" in notice, notice


def query_log_has(conn, column: str) -> bool:
    return (
        conn.execute(
            "select 1 from information_schema.columns where table_schema = 'sieve' "
            "and table_name = 'query_log' and column_name = %s",
            (column,),
        ).fetchone()
        is not None
    )


def test_a_certified_recall_holds_with_a_blind_spot_proxy(approx_world, imagenet, request):
    """RT 90% in the default mode over ``blind_score``: the certified claims hold (see the module
    docstring for the binomial floor). Without the ``certified`` column (migration 0010) the test
    is an expected failure that starts asserting once the column lands."""
    truth = imagenet
    with approx_world.connect(prepare_threshold=None) as conn:
        if not query_log_has(conn, "certified"):
            request.applymarker(pytest.mark.xfail(strict=False, reason="needs query_log.certified"))
        assert query_log_has(conn, "certified"), "sieve.query_log has no certified column"
        certified, met, broken = 0, 0, 0
        for n in range(N_TRIALS):
            conn.execute(f"set sieve.seed = {2000 + n}")
            ids = {r[0] for r in conn.execute(BLIND_RT).fetchall()}
            mode, target, claimed = conn.execute(
                "select mode, target, certified from sieve.query_log order by query_id desc limit 1"
            ).fetchone()
            assert (mode, target) == ("recall", 0.9), (mode, target)
            ok = len(ids & truth) / len(truth) >= 0.9
            certified += bool(claimed)
            met += ok
            broken += bool(claimed) and not ok
    floor = int(binom.ppf(0.001, N_TRIALS, CONFIDENCE))
    kept = N_TRIALS - broken
    print(
        f"\nblind-spot RT on imagenet: {met}/{N_TRIALS} met, {certified} certified, {broken} certified "
        f"but missed; kept promises {kept} (floor {floor})"
    )
    assert kept >= floor, (kept, floor, certified, met)
