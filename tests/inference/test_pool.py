"""The worker pool on real models: answers equal a bare ONNX Runtime session, row for row."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from inference import InferenceError, ModelNotFoundError, ModelRef, decode_images, zipmap_to_array
from tests.inference import models
from tests.inference.conftest import direct

TIGHT = {"rtol": 1e-5, "atol": 1e-6}


def test_logreg_zipmap_off(runner, zoo):
    x = zoo.digits.x
    out = runner.run(runner.pool.infer(ModelRef("proxy@1", zoo.logreg_plain), {"X": x}))
    label, prob = direct(zoo.logreg_plain, {"X": x})
    np.testing.assert_array_equal(out["label"], label)
    np.testing.assert_allclose(out["probabilities"], prob, **TIGHT)
    np.testing.assert_array_equal(out["label"], zoo.logreg.predict(x))


def test_logreg_zipmap_on_comes_back_as_a_matrix(runner, zoo):
    x = zoo.digits.x[:300]
    out = runner.run(runner.pool.infer(ModelRef("proxy_zm@1", zoo.logreg_zipmap), {"X": x}))
    label, maps = direct(zoo.logreg_zipmap, {"X": x})
    expected, classes = zipmap_to_array(maps)
    assert classes == list(range(10))
    assert out["output_probability"].shape == (300, 10)
    np.testing.assert_array_equal(out["output_label"], label)
    np.testing.assert_allclose(out["output_probability"], expected, **TIGHT)


def test_mlp_oracle(runner, zoo):
    x = zoo.digits.x
    ref = ModelRef("oracle@1", zoo.mlp_path, postprocess={"probabilities": {"op": "index", "index": 7}})
    out = runner.run(runner.pool.infer(ref, {"X": x.astype(np.float64)}))  # cast to float32 by the worker
    label, prob = direct(zoo.mlp_path, {"X": x})
    np.testing.assert_array_equal(out["label"], label)
    np.testing.assert_allclose(out["probabilities"], prob[:, 7], **TIGHT)
    assert (out["label"] == zoo.digits.y).mean() > 0.97


def test_text_pipeline_on_generated_sentences(runner, zoo):
    texts = zoo.texts.reshape(-1, 1)
    out = runner.run(runner.pool.infer(ModelRef("sentiment@1", zoo.text_path), {"text": texts}))
    label, prob = direct(zoo.text_path, {"text": texts})
    np.testing.assert_array_equal(out["label"], label)
    np.testing.assert_allclose(out["probabilities"], prob, **TIGHT)
    assert (out["label"] == zoo.text_labels).mean() > 0.95


@pytest.mark.skipif(not models.SHARED_REVIEWS.exists(), reason=f"{models.SHARED_REVIEWS} is absent")
def test_text_pipeline_on_real_reviews(runner, tmp_path):
    texts, one_star = models.amazon_reviews()
    path = models.text_pipeline(texts[:4000], one_star[:4000], tmp_path / "reviews.onnx", max_features=3000)
    held_out = texts[4000:4600].reshape(-1, 1)
    ref = ModelRef("one_star@1", path)

    async def concurrently():  # three callers, answers split back correctly
        parts = np.array_split(held_out, 3)
        return await asyncio.gather(*(runner.pool.infer(ref, {"text": p}) for p in parts))

    outs = runner.run(concurrently())
    label, prob = direct(path, {"text": held_out})
    np.testing.assert_array_equal(np.concatenate([o["label"] for o in outs]), label)
    np.testing.assert_allclose(np.concatenate([o["probabilities"] for o in outs]), prob, **TIGHT)


def test_image_model_fed_png_bytes(runner, zoo):
    pngs = zoo.digits.png[:400]
    opts = {"decode": "image", "mode": "L", "scale": "1/255", "layout": "NCHW"}
    ref = ModelRef("digit_image@1", zoo.image_mlp, preprocess={"image": opts})
    blobs = np.empty(len(pngs), dtype=object)
    blobs[:] = pngs
    out = runner.run(runner.pool.infer(ref, {"image": blobs}))
    tensor = decode_images(pngs, opts)
    assert tensor.shape == (400, 1, 8, 8)
    label, prob = direct(zoo.image_mlp, {"image": tensor})
    np.testing.assert_array_equal(out["label"], label)
    np.testing.assert_allclose(out["probabilities"], prob, **TIGHT)
    # The PNG round trip changes pixels by < 1/510: the MLP's answers hardly move.
    assert (out["label"] == zoo.mlp.predict(zoo.digits.x[:400])).mean() > 0.99


def test_concurrent_callers_are_batched_together(runner, zoo):
    ref = ModelRef("oracle_conc@1", zoo.mlp_path)
    x = zoo.digits.x
    chunks = [x[i * 40 : (i + 1) * 40] for i in range(8)]

    async def caller(chunk, rounds=6):
        return [await runner.pool.infer(ref, {"X": chunk}) for _ in range(rounds)]

    async def all_callers():
        return await asyncio.gather(*(caller(c) for c in chunks))

    results = runner.run(all_callers())
    for chunk, answers in zip(chunks, results, strict=True):
        label, prob = direct(zoo.mlp_path, {"X": chunk})
        for out in answers:
            np.testing.assert_array_equal(out["label"], label)
            np.testing.assert_allclose(out["probabilities"], prob, **TIGHT)
    stats = runner.pool.stats("oracle_conc@1")
    assert stats.requests == 48 and stats.rows == 48 * 40
    assert max(stats.recent_batch_sizes) > 40, stats.recent_batch_sizes  # coalesced across callers
    assert stats.batches < 48
    assert stats.ms_per_row["cpu"] > 0


def test_row_index_outputs_split_per_caller(runner, zoo):
    ref = ModelRef("detector@1", zoo.row_index)
    rng = np.random.default_rng(3)
    inputs = [rng.random((n, 4), dtype=np.float32) for n in (5, 17, 1, 30, 9)]

    async def callers():
        return await asyncio.gather(*(runner.pool.infer(ref, {"x": x}) for x in inputs))

    for x, out in zip(inputs, runner.run(callers()), strict=True):
        row, score = direct(zoo.row_index, {"x": x})
        np.testing.assert_array_equal(out["row"], row)  # renumbered to the caller's own rows
        np.testing.assert_array_equal(out["score"], score)
    assert max(runner.pool.stats("detector@1").recent_batch_sizes) > 30


def test_request_larger_than_a_batch_is_chunked(runner, zoo):
    x = np.tile(zoo.digits.x, (3, 1))  # 5391 rows, max_batch_rows is 2048
    out = runner.run(runner.pool.infer(ModelRef("oracle_big@1", zoo.mlp_path), {"X": x}))
    label, prob = direct(zoo.mlp_path, {"X": x})
    np.testing.assert_array_equal(out["label"], label)
    np.testing.assert_allclose(out["probabilities"], prob, **TIGHT)
    sizes = runner.pool.stats("oracle_big@1").recent_batch_sizes
    assert sum(sizes) == len(x) and max(sizes) <= 2048
    # The same for a row-index model: indices are shifted back to the request's rows.
    rng = np.random.default_rng(4)
    big = rng.random((5000, 4), dtype=np.float32)
    det = runner.run(runner.pool.infer(ModelRef("detector_big@1", zoo.row_index), {"x": big}))
    row, score = direct(zoo.row_index, {"x": big})
    np.testing.assert_array_equal(det["row"], row)
    np.testing.assert_array_equal(det["score"], score)


def test_bad_input_fails_the_batch_and_the_worker_survives(runner, zoo):
    ref = ModelRef("oracle_bad@1", zoo.mlp_path)
    pid = runner.pool.workers()[0].pid
    with pytest.raises(InferenceError, match="oracle_bad@1") as err:
        runner.run(runner.pool.infer(ref, {"X": np.zeros((4, 63), dtype=np.float32)}))
    assert "X" in str(err.value) and ("dimension" in str(err.value) or "shape" in str(err.value).lower())
    out = runner.run(runner.pool.infer(ref, {"X": zoo.digits.x[:10]}))
    assert len(out["label"]) == 10
    assert runner.pool.workers()[0].pid == pid
    assert runner.pool.stats("oracle_bad@1").errors == 1


def test_missing_model_file(runner, tmp_path):
    ref = ModelRef("ghost@1", tmp_path / "ghost.onnx")
    with pytest.raises(ModelNotFoundError, match="ghost.onnx"):
        runner.run(runner.pool.infer(ref, {"X": np.zeros((1, 64), dtype=np.float32)}))


def test_inputs_must_agree_on_rows(runner, zoo):
    ref = ModelRef("oracle@1", zoo.mlp_path)
    with pytest.raises(ValueError, match="rows"):
        runner.run(runner.pool.infer(ref, {"X": np.zeros((2, 64)), "Y": np.zeros((3, 1))}))


def test_cancelled_callers_do_not_disturb_others(runner, zoo):
    ref = ModelRef("oracle_cancel@1", zoo.mlp_path)
    x = zoo.digits.x[:50]

    async def scenario():
        doomed = [asyncio.ensure_future(runner.pool.infer(ref, {"X": x})) for _ in range(3)]
        keep = asyncio.ensure_future(runner.pool.infer(ref, {"X": x}))
        await asyncio.sleep(0)
        for task in doomed:
            task.cancel()
        return await keep

    out = runner.run(scenario())
    np.testing.assert_array_equal(out["label"], direct(zoo.mlp_path, {"X": x})[0])
    assert runner.pool.queued_requests == 0


def test_string_labels_and_zipmap_with_string_keys(runner, zoo, tmp_path):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    names = np.array(["good", "bad"], dtype=object)[zoo.text_labels]
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(list(zoo.texts), names)
    options = {id(pipe.steps[0][1]): {"locale": "C.UTF-8"}}
    onx = convert_sklearn(
        pipe, initial_types=[("text", StringTensorType([None, 1]))], target_opset=17, options=options
    )
    path = models.save(onx, tmp_path / "named.onnx")
    texts = zoo.texts[:50].reshape(-1, 1)
    ref = ModelRef("named@1", path, outputs=("output_label", "output_probability"))
    out = runner.run(runner.pool.infer(ref, {"text": texts}))
    label, maps = direct(path, {"text": texts})
    assert out["output_label"].dtype == object and out["output_label"].tolist() == label.tolist()
    expected, classes = zipmap_to_array(maps)
    assert classes == ["bad", "good"]
    np.testing.assert_allclose(out["output_probability"], expected, **TIGHT)
    only = runner.run(
        runner.pool.infer(ModelRef("named@1", path, outputs=("output_label",)), {"text": texts})
    )
    assert list(only) == ["output_label"]


def test_undecodable_image_fails_with_the_row(runner, zoo):
    ref = ModelRef(
        "digit_image@1",
        zoo.image_mlp,
        preprocess={"image": {"decode": "image", "mode": "L", "scale": "1/255"}},
    )
    blobs = [zoo.digits.png[0], b"\x89PNG but not really", zoo.digits.png[2]]
    with pytest.raises(InferenceError, match="row 1"):
        runner.run(runner.pool.infer(ref, {"image": blobs}))  # a list of bytes is fine too
    out = runner.run(runner.pool.infer(ref, {"image": [zoo.digits.png[0], zoo.digits.png[2]]}))
    assert len(out["label"]) == 2


def test_close_lets_running_requests_finish(zoo):
    from inference import InferencePool, PoolClosedError
    from tests.inference.conftest import Runner

    r = Runner(InferencePool(workers=1, intra_op_threads=1))
    ref = ModelRef("oracle@1", zoo.mlp_path)

    async def scenario():
        tasks = [asyncio.ensure_future(r.pool.infer(ref, {"X": zoo.digits.x[:30]})) for _ in range(4)]
        await asyncio.sleep(0)
        await r.pool.close()
        with pytest.raises(PoolClosedError):
            await r.pool.infer(ref, {"X": zoo.digits.x[:1]})
        return await asyncio.gather(*tasks)

    try:
        results = r.run(scenario())
    finally:
        r.loop.close()
    assert all(len(out["label"]) == 30 for out in results)
    assert r.pool.workers()[0].state == "stopped"
