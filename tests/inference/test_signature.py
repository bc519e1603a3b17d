"""Model introspection and validation of model files."""

from __future__ import annotations

import hashlib

import pytest

from inference import ModelLoadError, ModelNotFoundError, file_sha256, load_signature


def test_sklearn_zipmap_signature(zoo):
    sig = load_signature(zoo.logreg_zipmap)
    x = sig.input("X")
    assert (x.kind, x.elem_type, x.shape[1]) == ("tensor", "float32", 64)
    assert x.shape[0] is None or isinstance(x.shape[0], str)  # the batch dim is symbolic
    assert sig.output_names == ["output_label", "output_probability"]
    assert sig.output("output_label").elem_type == "int64"
    probs = sig.output("output_probability")
    assert probs.kind == "sequence"
    assert probs.type_str == "seq(map(int64,float32))"
    assert sig.opsets["ai.onnx.ml"] >= 1


def test_plain_and_text_and_handmade_signatures(zoo):
    plain = load_signature(zoo.logreg_plain)
    assert plain.output("probabilities").shape == (None, 10) or plain.output("probabilities").shape[1] == 10
    text = load_signature(zoo.text_path)
    assert text.input("text").elem_type == "string"
    assert text.input("text").shape[1] == 1
    img = load_signature(zoo.image_mlp)
    assert img.input("image").shape == ("N", 1, 8, 8)
    assert img.output("label").elem_type == "int64"


def test_content_hash(zoo):
    data = zoo.mlp_path.read_bytes()
    assert file_sha256(zoo.mlp_path) == hashlib.sha256(data).hexdigest()
    assert load_signature(zoo.mlp_path).sha256 == hashlib.sha256(data).hexdigest()


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelNotFoundError, match="nope.onnx"):
        load_signature(missing)


@pytest.mark.parametrize(
    "content",
    [b"this is not a model at all\n", b"\x08\x07\x12\x04junk" + bytes(range(256)), b""],
    ids=["text", "garbage", "empty"],
)
def test_corrupt_file(tmp_path, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(ModelLoadError, match="bad.onnx"):
        load_signature(bad)


def test_truncated_model(zoo, tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(zoo.mlp_path.read_bytes()[:-300])
    with pytest.raises(ModelLoadError, match="cut.onnx"):
        load_signature(cut)
