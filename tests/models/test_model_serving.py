"""Serving behaviour of model functions: text models, concurrency and batching, worker crashes."""

from __future__ import annotations

import asyncio
import threading
import time

import asyncpg
import numpy as np
import psutil
import psycopg
import pytest

from tests.inference.models import (
    SHARED_REVIEWS,
    amazon_reviews,
    generated_sentences,
    row_index_model,
    text_pipeline,
)
from tests.models.conftest import direct_run


def _load_texts(conn, table: str, texts) -> None:
    conn.execute(f"create table {table} (id int primary key, review text)")
    with conn.cursor().copy(f"copy {table} (id, review) from stdin") as copy:
        for i, text in enumerate(texts):
            copy.write_row((i, text))


def _check_text_model(world, name: str, path, table: str, texts) -> None:
    with world.connect() as conn:
        _load_texts(conn, table, texts)
        conn.execute(
            f"create function {name}(review text) returns table (label bigint, p_bad real) "
            f'language onnx as \'{path.name}\', \'{{"outputs": {{"p_bad": '
            f'{{"output": "probabilities", "post": {{"op": "index", "index": 1}}}}}}}}\''
        )
        rows = conn.execute(
            f"select r.id, s.label, s.p_bad from {table} r, lateral {name}(r.review) s order by r.id"
        ).fetchall()
    expected = direct_run(path, {"text": np.array(texts, dtype=object).reshape(-1, 1)})
    assert [r[1] for r in rows] == expected["label"].tolist()
    np.testing.assert_allclose([r[2] for r in rows], expected["probabilities"][:, 1], rtol=1e-5)


def test_text_model_on_generated_reviews(world):
    texts, labels = generated_sentences(300, seed=3)
    path = text_pipeline(texts, labels, world.models_dir / "sentiment_generated.onnx")
    _check_text_model(world, "is_bad_generated", path, "generated_reviews", list(texts))


@pytest.mark.skipif(not SHARED_REVIEWS.exists(), reason="../shared/data/amazon_reviews.csv is absent")
def test_text_model_on_real_amazon_reviews(world):
    texts, one_star = amazon_reviews()
    path = text_pipeline(texts, one_star, world.models_dir / "one_star.onnx", max_features=5000)
    _check_text_model(world, "is_one_star", path, "amazon_reviews", list(texts[:1500]))


def test_several_rows_per_input_from_a_row_index_output(world):
    path = row_index_model(world.models_dir)
    rng = np.random.default_rng(5)
    x = rng.random((120, 4)).astype(np.float32)
    with world.connect() as conn:
        conn.execute("create table boxes_in (id int primary key, x real[])")
        for i, row in enumerate(x):
            conn.execute("insert into boxes_in values (%s, %s)", (i, row.tolist()))
        conn.execute(
            f"create function detect(x real[]) returns table (det_row bigint, score real) language onnx "
            f'as \'{path.name}\', \'{{"rows": "row_index", "outputs": {{"det_row": "row"}}}}\''
        )
        rows = conn.execute(
            "select b.id, d.score from boxes_in b, lateral detect(b.x) d order by b.id"
        ).fetchall()
    expected = [(i, float(x[i, 1])) for i in range(len(x)) if x[i, 0] > 0.5]
    assert [r[0] for r in rows] == [e[0] for e in expected]
    np.testing.assert_allclose([r[1] for r in rows], [e[1] for e in expected], rtol=1e-6)


def test_eight_concurrent_clients_share_batches(world):
    """Each client asks for 60 rows; the pool must form batches larger than any one request."""
    # ~1 ms per row: while one client's rows run, the others' requests queue up and coalesce.
    path = deep_shared_mlp(world.models_dir, depth=40)
    with world.connect() as conn:
        conn.execute(
            f"create function wide_label(x real[]) returns bigint language onnx "
            f"as '{path.name}', '{{\"output\": \"label\"}}'"
        )

    async def client(k: int) -> list:
        conn = await asyncpg.connect(world.server.dsn())
        try:
            # $1 is bound in binary: the planner decodes it and pushes the predicate down.
            return await conn.fetch(
                "select id, wide_label(pixels) as label from digits "
                "where id % 8 = $1 and id < 480 order by id",
                k,
            )
        finally:
            await conn.close()

    async def everyone() -> list:
        return await asyncio.gather(*(client(k) for k in range(8)))

    results = asyncio.run(everyone())
    expected = direct_run(path, {"X": world.digits.x[:480]})["label"]
    for k, rows in enumerate(results):
        assert [r["id"] for r in rows] == list(range(k, 480, 8))
        assert [r["label"] for r in rows] == expected[k:480:8].tolist()
    with world.connect() as conn:
        stats = conn.execute("select stats from sieve.models where name = 'wide_label'").fetchone()[0]
    assert stats["rows"] == 480
    # a pass may split its inputs into lanes (planner.site_pass): a batch serving more than one
    # request is a batch larger than the requests that formed it
    assert stats["batches"] < stats["requests"], f"no cross-query batch formed: {stats}"


def deep_shared_mlp(out_dir, width: int = 1024, depth: int = 80):
    """Many layers sharing one weight matrix: seconds of CPU per thousand rows, a small file."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.inference.models import OPSET, save

    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array((rng.standard_normal((64, width)) / 8).astype(np.float32), "w_in"),
        numpy_helper.from_array(
            (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), "w"
        ),
        numpy_helper.from_array((rng.standard_normal((width, 10))).astype(np.float32), "w_out"),
    ]
    nodes = [helper.make_node("MatMul", ["X", "w_in"], ["h0"])]
    for i in range(depth):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"h{depth}", "w_out"], ["logits"]))
    nodes.append(helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes,
        "deep_shared",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return save(model, out_dir / f"deep_shared_{width}x{depth}.onnx")


def _inference_workers(server_pid: int) -> list[psutil.Process]:
    children = psutil.Process(server_pid).children(recursive=True)
    return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


def test_killing_a_worker_fails_that_query_only_and_the_next_succeeds(world):
    path = deep_shared_mlp(world.models_dir)
    with world.connect() as conn:
        conn.execute(
            f"create function heavy_label(x real[]) returns bigint language onnx "
            f"as '{path.name}', '{{\"output\": \"label\"}}'"
        )
        bystander = world.connect()
        # Warm up: the worker exists and holds the model, so the kill lands mid-inference.
        conn.execute("select heavy_label(pixels) from digits where id < 2")

        workers = _inference_workers(world.server.proc.pid)
        busy_before = sum(sum(p.cpu_times()[:2]) for p in workers)

        def kill_when_busy() -> None:
            # Kill once the workers have burnt 0.15 s of CPU on the query: a batch is in flight.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if sum(sum(p.cpu_times()[:2]) for p in workers) - busy_before > 0.15:
                    break
                time.sleep(0.01)
            for proc in workers:
                proc.kill()

        threading.Thread(target=kill_when_busy).start()
        with pytest.raises(psycopg.Error) as caught:
            # At most one batch (1,024 rows): the kill cannot fall between two batches.
            conn.execute("select count(heavy_label(pixels)) from digits where id between 2 and 1000")
        assert caught.value.sqlstate == "XX000"
        assert "heavy_label" in str(caught.value)
        assert bystander.execute("select 3").fetchone() == (3,)
        got = conn.execute("select id, heavy_label(pixels) from digits where id < 30 order by id").fetchall()
        bystander.close()
    expected = direct_run(path, {"X": world.digits.x[:30]})["label"]
    assert [r[1] for r in got] == expected.tolist()
