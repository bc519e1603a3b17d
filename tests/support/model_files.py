"""Model files and cache lookups shared by the model and security tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.inference.models import OPSET, save

# The digits models of tests.inference.models as SQL functions (files in the server's models dir)
DIGIT_ORACLE_DDL = (
    "create function digit_oracle(pixels real[]) returns int language onnx "
    "as 'digits_mlp.onnx', '{\"output\": \"label\"}'"
)
DIGIT_PROXY_P7_DDL = (
    "create function digit_proxy_p7(pixels real[]) returns real language onnx "
    "as 'digits_logreg.onnx', "
    '\'{"output": {"output": "probabilities", "post": {"op": "index", "index": 7}}}\''
)


def cache_table(conn, model: str) -> str:
    """The cache table of a registered model's current version (``sieve_cache.m<id>_v<n>``)."""
    model_id, version = conn.execute(
        "select id, version from sieve.models where name = %s", (model,)
    ).fetchone()
    return f"sieve_cache.m{model_id}_v{version}"


def direct_run(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference: a bare ONNX Runtime session in the test process."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def bytes_echo(path: Path, length: int = 128) -> Path:
    """uint8 [N, length] -> float [N, length]: the model's answer is the input's bytes."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["b"], ["bytes"], to=TensorProto.FLOAT)],
        "bytes_echo",
        [helper.make_tensor_value_info("b", TensorProto.UINT8, ["N", length])],
        [helper.make_tensor_value_info("bytes", TensorProto.FLOAT, ["N", length])],
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def heavy_model(path: Path, megabytes: int) -> Path:
    """X [N, 64] -> X @ W, with W about ``megabytes`` MB of zeros: a large file that loads."""
    columns = megabytes * 1_000_000 // (64 * 4)
    weights = numpy_helper.from_array(np.zeros((64, columns), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "w"], ["Y"])],
        "heavy",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", columns])],
        [weights],
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)
