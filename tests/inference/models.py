"""Real ONNX models for the inference tests, built from real data in a second or two."""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # onnx 1.23 writes IR 14 by default; ONNX Runtime 1.31 reads up to 13

SHARED_REVIEWS = Path(__file__).resolve().parents[3] / "shared" / "data" / "amazon_reviews.csv"


@dataclass(frozen=True)
class Digits:
    """scikit-learn's digits, pixels scaled to [0, 1] (the models' input), float32."""

    x: np.ndarray
    y: np.ndarray

    @property
    def png(self) -> list[bytes]:
        """The same digits as 8x8 grayscale PNGs (pixel = round(x * 255))."""
        return [png_bytes(row.reshape(8, 8)) for row in self.x]


def load_digits_data() -> Digits:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return Digits((x / 16.0).astype(np.float32), y.astype(np.int64))


def png_bytes(gray01: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(gray01 * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = min(model.ir_version, IR_VERSION)
    path.write_bytes(model.SerializeToString())
    return path


def quiet_fit(estimator, x, y):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(x, y)


def digits_logreg(d: Digits, out_dir: Path) -> tuple:
    """The cheap proxy: LogisticRegression, converted with ZipMap on and off."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    clf = quiet_fit(LogisticRegression(max_iter=60), d.x, d.y)
    zipmap = save(to_onnx(clf, d.x[:1], target_opset=OPSET), out_dir / "digits_logreg_zipmap.onnx")
    plain = to_onnx(clf, d.x[:1], target_opset=OPSET, options={id(clf): {"zipmap": False}})
    return clf, zipmap, save(plain, out_dir / "digits_logreg.onnx")


def digits_mlp(d: Digits, out_dir: Path) -> tuple:
    """The accurate oracle: an MLP, converted without ZipMap."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    clf = quiet_fit(MLPClassifier(hidden_layer_sizes=(64,), max_iter=150, random_state=0), d.x, d.y)
    onx = to_onnx(clf, d.x[:1], target_opset=OPSET, options={id(clf): {"zipmap": False}})
    return clf, save(onx, out_dir / "digits_mlp.onnx")


def image_mlp(clf, out_dir: Path) -> Path:
    """The MLP's weights behind Flatten: takes [N, 1, 8, 8] images (fed from PNG by preprocess)."""
    w0, w1 = (w.astype(np.float32) for w in clf.coefs_)
    b0, b1 = (b.astype(np.float32) for b in clf.intercepts_)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w0, "w0"), (b0, "b0"), (w1, "w1"), (b1, "b1"))]
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w0", "b0"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w1", "b1"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "image_mlp",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10]),
        ],
        inits,
    )
    return save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), out_dir / "image_mlp.onnx"
    )


def relu_layers(
    dims: list[int], rng: np.random.Generator, first: str = "X", bias_scale: float = 0.0
) -> tuple[list, list, str]:
    """Dense layers dims[0] -> ... -> dims[-1] (Gemm, ReLU between them) with random weights
    scaled by 1/sqrt(fan-in): (initializers, nodes, the last Gemm's output name)."""
    inits, nodes, prev = [], [], first
    for i, (a, b) in enumerate(zip(dims, dims[1:], strict=False)):
        inits.append(
            numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}")
        )
        bias = rng.standard_normal(b) * bias_scale if bias_scale else np.zeros(b)
        inits.append(numpy_helper.from_array(bias.astype(np.float32), f"b{i}"))
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"]))
        prev = f"g{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    return inits, nodes, prev


def wide_mlp(out_dir: Path, width: int = 2048, seed: int = 0) -> Path:
    """64 -> width -> width -> 10 with random weights: slow enough to be caught in flight."""
    inits, nodes, _ = relu_layers([64, width, width, 10], np.random.default_rng(seed))
    nodes.append(helper.make_node("ArgMax", ["g2"], ["label"], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes,
        "wide_mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 64])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("g2", TensorProto.FLOAT, ["N", 10]),
        ],
        inits,
    )
    return save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), out_dir / "wide_mlp.onnx"
    )


def row_index_model(out_dir: Path) -> Path:
    """A detector-shaped model: for x [N, 4] it returns the rows whose x[:, 0] > 0.5.

    Outputs: ``row`` [M] int64 (the input row: the row-index column), ``score`` [M] = x[row, 1].
    """
    nodes = [
        helper.make_node(
            "Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, dtype=np.int64))
        ),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1, dtype=np.int64))),
        helper.make_node(
            "Constant", [], ["half"], value=numpy_helper.from_array(np.array(0.5, dtype=np.float32))
        ),
        helper.make_node(
            "Constant", [], ["axes0"], value=numpy_helper.from_array(np.array([0], dtype=np.int64))
        ),
        helper.make_node("Gather", ["x", "zero"], ["c0"], axis=1),
        helper.make_node("Greater", ["c0", "half"], ["hit"]),
        helper.make_node("NonZero", ["hit"], ["nz"]),
        helper.make_node("Squeeze", ["nz", "axes0"], ["row"]),
        helper.make_node("Gather", ["x", "row"], ["picked"], axis=0),
        helper.make_node("Gather", ["picked", "one"], ["score"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "row_index",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("row", TensorProto.INT64, ["M"]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["M"]),
        ],
    )
    return save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), out_dir / "row_index.onnx"
    )


# -- text ---------------------------------------------------------------------------------------

_GOOD = ["great", "excellent", "works well", "love it", "sturdy", "fast shipping", "recommend"]
_BAD = ["terrible", "broke", "waste of money", "stopped working", "refund", "leaked", "awful"]
_THINGS = ["batteries", "charger", "headphones", "kettle", "case", "cable", "lamp"]


def generated_sentences(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Short product reviews with a known sentiment (1 = bad)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        bad = int(rng.integers(2))
        words = _BAD if bad else _GOOD
        picked = rng.choice(words, size=2, replace=False)
        texts.append(f"the {rng.choice(_THINGS)} is {picked[0]}, {picked[1]}")
        labels.append(bad)
    return np.array(texts, dtype=object), np.array(labels)


def text_pipeline(texts: np.ndarray, labels: np.ndarray, path: Path, max_features: int | None = None) -> Path:
    """TF-IDF + LogisticRegression taking a [N, 1] string tensor named ``text``."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipe = quiet_fit(
        make_pipeline(TfidfVectorizer(max_features=max_features), LogisticRegression(max_iter=200)),
        list(texts),
        labels,
    )
    # ORT's StringNormalizer needs an installed locale; skl2onnx defaults to en_US.UTF-8, which
    # minimal images lack. C.UTF-8 exists everywhere glibc does.
    options = {id(pipe.steps[0][1]): {"locale": "C.UTF-8"}, id(pipe.steps[-1][1]): {"zipmap": False}}
    onx = convert_sklearn(
        pipe, initial_types=[("text", StringTensorType([None, 1]))], target_opset=OPSET, options=options
    )
    return save(onx, path)


def amazon_reviews() -> tuple[np.ndarray, np.ndarray]:
    """Real reviews and whether they got 1 star."""
    with SHARED_REVIEWS.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts = np.array([r["review"] for r in rows], dtype=object)
    return texts, np.array([int(r["rating"]) == 1 for r in rows], dtype=np.int64)
