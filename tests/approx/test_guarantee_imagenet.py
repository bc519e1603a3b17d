"""The precision and recall guarantees through SQL on real data: SUPG's ImageNet file (50,000 images, 50
positives, the shipped proxy scores), the oracle an ONNX model that reveals the human label.

Each trial is one seeded ``PRECISION TARGET 95%`` (or ``RECALL TARGET 90%``) ``CONFIDENCE 95%
BUDGET 1000`` query; a trial succeeds when the returned rows have precision >= 95% (recall >= 90%
of the 50 positives). The guarantee says P(success) >= 95%, so
the number of successes in n trials is at least Binomial(n, 0.95), and the test accepts anything
above that distribution's 0.1% quantile (a correct implementation fails it at most 1 time in 1000).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.stats import binom

from tests.approx.test_approx_sql import _last_log
from tests.inference.models import OPSET, save

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "supg" / "imagenet.csv"
TIME_BUDGET_S = 60.0
MAX_TRIALS = 200
MIN_TRIALS = 20
QUERY = (
    "SELECT id FROM imagenet WHERE reveal(x) > 0.5 {target} CONFIDENCE 95% BUDGET 1000 "
    "USING PROXY proxy_score"
)
PT = QUERY.format(target="PRECISION TARGET 95%")
RT = QUERY.format(target="RECALL TARGET 90%")

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


@pytest.fixture(scope="module")
def imagenet(approx_world):
    with DATA.open() as f:
        rows = [(int(r["id"]), r["label"] == "True", float(r["proxy_score"])) for r in csv.DictReader(f)]
    reveal_model(approx_world.models_dir)
    with approx_world.connect() as conn:
        conn.execute("drop table if exists imagenet")
        conn.execute("create table imagenet (id int primary key, x real[], proxy_score float8)")
        with conn.cursor().copy("copy imagenet (id, x, proxy_score) from stdin") as copy:
            for i, label, score in rows:
                copy.write_row((i, [1.0 if label else 0.0, float(i)], score))
        conn.execute("analyze imagenet")
        conn.execute(
            "create or replace function reveal(x real[]) returns real language onnx as 'reveal.onnx'"
        )
    return {i for i, label, _ in rows if label}


# RECALL TARGET 90% (RT) is not run here: at budget 1000 the recall operator certifies no proxy
# threshold on this file and returns every row (precision 0.001), which meets the target trivially.
@pytest.mark.parametrize(("sql", "mode", "target", "max_trials"), [(PT, "precision", 0.95, MAX_TRIALS)])
def test_the_target_holds_over_seeded_trials(approx_world, imagenet, sql, mode, target, max_trials):
    truth = imagenet
    assert len(truth) == 50
    successes, precisions, recalls, n = 0, [], [], 0
    started = time.monotonic()
    # prepare_threshold=None: psycopg prepares a statement run 5 times (extended protocol), and
    # approximate clauses need the simple query protocol
    with approx_world.connect(prepare_threshold=None) as conn:
        while n < max_trials and (n < MIN_TRIALS or time.monotonic() - started < TIME_BUDGET_S):
            conn.execute(f"set sieve.seed = {1000 + n}")
            ids = {r[0] for r in conn.execute(sql).fetchall()}
            logged = _last_log(conn)
            calls, hits = conn.execute(
                "select model_calls, cache_hits from sieve.query_log order by query_id desc limit 1"
            ).fetchone()
            assert logged[:3] == (mode, target, 0.95)
            assert calls.get("reveal", 0) + hits <= 1000, (calls, hits)  # labels, cached or not
            precision = len(ids & truth) / len(ids) if ids else 1.0
            precisions.append(precision)
            recalls.append(len(ids & truth) / len(truth))
            successes += (precision if mode == "precision" else recalls[-1]) >= target
            n += 1
    elapsed = time.monotonic() - started
    floor = int(binom.ppf(0.001, n, 0.95))
    print(
        f"\n{mode} target {target:.0%} on imagenet: {successes}/{n} trials met the target "
        f"(floor {floor}) in {elapsed:.1f} s; "
        f"mean precision {np.mean(precisions):.3f}, mean recall {np.mean(recalls):.3f}"
    )
    assert successes >= floor, (successes, n, floor)
    assert np.mean(recalls if mode == "precision" else precisions) > 0.5  # useful, not a trivial answer
