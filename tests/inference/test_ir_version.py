"""Models written by today's ``onnx`` (stamped with an IR version newer than ONNX Runtime reads)
load when their opsets are supported, and say what to do when they are not."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import psycopg
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference.loading import UnsupportedModel, open_session
from tests.support.servers import SieveProcess

SUPPORTED_OPSET = 17


def _affine(opset: int | None) -> onnx.ModelProto:
    """y = 2x + 1 over float [N]; ``opset`` None leaves onnx's own default (its newest)."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["twice"]), helper.make_node("Add", ["twice", "one"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
        [two, one],
    )
    imports = None if opset is None else [helper.make_opsetid("", opset)]
    return helper.make_model(graph, opset_imports=imports)  # IR version: the onnx package's own


def _runtime_refuses(model: onnx.ModelProto) -> bool:
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:
        return True
    return False


@pytest.fixture(scope="module")
def newer_ir() -> onnx.ModelProto:
    model = _affine(SUPPORTED_OPSET)
    if not _runtime_refuses(model):
        pytest.skip(f"this onnxruntime reads IR version {model.ir_version}: nothing to adapt")
    return model


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, newer_ir) -> Iterator[SieveProcess]:
    models_dir = tmp_path_factory.mktemp("ir-models")
    (models_dir / "affine_new_ir.onnx").write_bytes(newer_ir.SerializeToString())
    (models_dir / "affine_new_opset.onnx").write_bytes(_affine(None).SerializeToString())
    process = SieveProcess(
        data_dir=tmp_path_factory.mktemp("ir-server") / "data",
        extra_args=["--models-dir", str(models_dir), "--inference-workers", "1"],
    ).start()
    process.models_dir = models_dir
    yield process
    process.stop()


def test_a_model_stamped_with_a_newer_ir_version_opens_as_the_runtimes_newest(tmp_path, newer_ir):
    path = tmp_path / "affine.onnx"
    path.write_bytes(newer_ir.SerializeToString())
    before = path.read_bytes()
    session = open_session(path, ort.SessionOptions(), ["CPUExecutionProvider"])
    x = np.array([0.0, 1.5, -2.0], dtype=np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], 2 * x + 1)
    assert path.read_bytes() == before  # adapted in memory only


def test_a_newer_ir_version_model_answers_through_sql_with_the_files_own_hash(server):
    path = server.models_dir / "affine_new_ir.onnx"
    x = np.array([0.25, -1.0, 3.5, 7.0], dtype=np.float32)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("create table xs (id int primary key, x real)")
        for i, value in enumerate(x):
            conn.execute("insert into xs values (%s, %s)", (i, float(value)))
        conn.execute("create function affine(x real) returns real language onnx as 'affine_new_ir.onnx'")
        rows = conn.execute("select affine(x) from xs order by id").fetchall()
        content_hash = conn.execute("select content_hash from sieve.models where name = 'affine'").fetchone()[
            0
        ]
    np.testing.assert_allclose([r[0] for r in rows], 2 * x + 1, rtol=1e-6)
    assert content_hash == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_model_whose_opset_the_runtime_lacks_is_refused_with_advice(server):
    if not _runtime_refuses(_affine(None)):
        pytest.skip("this onnxruntime supports the onnx package's newest opset")
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(
                "create function affine2(x real) returns real language onnx as 'affine_new_opset.onnx'"
            )
        assert conn.execute("select count(*) from sieve.models where name = 'affine2'").fetchone()[0] == 0
    message = caught.value.diag.message_primary
    assert caught.value.sqlstate == "42P13"
    assert f"opset {onnx.defs.onnx_opset_version()}" in message
    assert "onnx.version_converter.convert_version" in message
    assert "opset_version=" in message


def test_open_session_names_the_runtimes_newest_opset(tmp_path):
    path = tmp_path / "far_future.onnx"
    model = _affine(SUPPORTED_OPSET)
    model.opset_import[0].version = 99
    path.write_bytes(model.SerializeToString())
    with pytest.raises(UnsupportedModel, match=r"opset 99 of domain ai\.onnx.*supports up to opset \d+"):
        open_session(path, ort.SessionOptions(), ["CPUExecutionProvider"])


def test_external_weights_are_found_beside_a_model_read_as_another_ir_version(
    tmp_path, newer_ir, monkeypatch
):
    path = tmp_path / "weights" / "affine.onnx"
    path.parent.mkdir()
    onnx.save(newer_ir, str(path), save_as_external_data=True, location="affine.data", size_threshold=0)
    assert (path.parent / "affine.data").stat().st_size > 0
    monkeypatch.chdir(Path("/"))  # ORT would look for the weights in the working directory
    session = open_session(path, ort.SessionOptions(), ["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": np.array([1.0], dtype=np.float32)})[0], [3.0])
