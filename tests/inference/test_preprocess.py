"""Image decoding options and output post-ops, checked against hand-computed arrays."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference import apply_post_ops, decode_images, zipmap_to_array
from inference.ipc import encode_tensor, plan_layout, read_tensors, write_layout


def encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture()
def rgb_images() -> tuple[np.ndarray, list[bytes]]:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(3, 4, 6, 3), dtype=np.uint8)  # N, H, W, C
    return pixels, [encode(p) for p in pixels]


def test_rgb_nchw_scale_mean_std(rgb_images):
    pixels, blobs = rgb_images
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    opts = {"decode": "image", "mode": "RGB", "scale": "1/255", "mean": mean, "std": std, "layout": "NCHW"}
    out = decode_images(blobs, opts)
    expected = ((pixels.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)).transpose(0, 3, 1, 2)
    assert out.shape == (3, 3, 4, 6) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_nhwc_is_the_transpose_of_nchw(rgb_images):
    _, blobs = rgb_images
    nhwc = decode_images(blobs, {"decode": "image", "scale": 1 / 255, "layout": "NHWC"})
    nchw = decode_images(blobs, {"decode": "image", "scale": 1 / 255, "layout": "NCHW"})
    assert nhwc.shape == (3, 4, 6, 3)
    np.testing.assert_array_equal(nhwc.transpose(0, 3, 1, 2), nchw)


def test_grayscale_resize_matches_pillow():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    blob = encode(gray)
    out = decode_images([blob, blob], {"decode": "image", "mode": "L", "resize": [4, 2], "dtype": "float64"})
    expected = np.asarray(Image.fromarray(gray).resize((2, 4), Image.Resampling.BILINEAR), dtype=np.float64)
    assert out.shape == (2, 1, 4, 2) and out.dtype == np.float64
    np.testing.assert_array_equal(out[1, 0], expected)


def test_rgb_to_gray_jpeg_and_flatten():
    rgb = np.full((5, 7, 3), 200, dtype=np.uint8)
    out = decode_images(
        [encode(rgb, "JPEG")], {"decode": "image", "mode": "L", "flatten": True, "dtype": "uint8"}
    )
    assert out.shape == (1, 35) and out.dtype == np.uint8
    assert abs(int(out.mean()) - 200) <= 2  # JPEG is lossy


def test_mixed_sizes_need_resize(rgb_images):
    _, blobs = rgb_images
    other = encode(np.zeros((5, 5, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="set resize"):
        decode_images([blobs[0], other], {"decode": "image"})
    out = decode_images([blobs[0], other], {"decode": "image", "resize": 5})
    assert out.shape == (2, 3, 5, 5)


@pytest.mark.parametrize(
    ("opts", "msg"),
    [
        ({"decode": "image", "layout": "NCWH"}, "layout"),
        ({"decode": "image", "mode": "CMYK"}, "mode"),
        ({"decode": "image", "mean": [1, 2]}, "mean"),
        ({"decode": "image", "std": [0]}, "std"),
        ({"decode": "image", "sacle": 2}, "sacle"),
        ({"decode": "video"}, "decode"),
    ],
)
def test_bad_options(rgb_images, opts, msg):
    with pytest.raises(ValueError, match=msg):
        decode_images(rgb_images[1], opts)


def test_undecodable_bytes_name_the_row(rgb_images):
    with pytest.raises(ValueError, match="row 1"):
        decode_images([rgb_images[1][0], b"not an image"], {"decode": "image"})


def test_post_ops_per_row():
    x = np.array([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]], dtype=np.float32)
    np.testing.assert_array_equal(apply_post_ops(x, "argmax"), [1, 2])
    np.testing.assert_array_equal(apply_post_ops(x, "max"), [3.0, 5.0])
    np.testing.assert_array_equal(apply_post_ops(x, {"op": "index", "index": 2}), [2.0, 5.0])
    soft = apply_post_ops(x, "softmax")
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(soft[0], np.exp(x[0]) / np.exp(x[0]).sum(), rtol=1e-6)
    np.testing.assert_array_equal(apply_post_ops(x, ["softmax", "argmax"]), [1, 2])
    with pytest.raises(ValueError, match="unknown post-op"):
        apply_post_ops(x, "median")


def test_zipmap_orders_columns_by_label():
    maps = [{2: 0.1, 0: 0.7, 1: 0.2}, {0: 0.0, 2: 1.0, 1: 0.0}]
    arr, labels = zipmap_to_array(maps)
    assert labels == [0, 1, 2]
    np.testing.assert_allclose(arr, [[0.7, 0.2, 0.1], [0.0, 0.0, 1.0]])


def test_wire_layout_concatenates_callers():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    b = np.arange(6, 10, dtype=np.float32).reshape(2, 2)
    s1 = np.array([["héllo"], [""]], dtype=object)
    s2 = np.array([["wörld"]], dtype=object)
    plan, total = plan_layout(
        {"x": [encode_tensor(a), encode_tensor(b)], "s": [encode_tensor(s1), encode_tensor(s2)]}
    )
    buf = bytearray(total)
    headers = write_layout(memoryview(buf), plan)
    out = read_tensors(bytes(buf), headers, copy=True)
    np.testing.assert_array_equal(out["x"], np.concatenate([a, b]))
    assert out["s"].shape == (3, 1) and out["s"].ravel().tolist() == ["héllo", "", "wörld"]
