"""Turn raw column values into model tensors, and model outputs into per-row answers.

Input preprocessing is described by JSON-like options, e.g. for an image column::

    {"decode": "image", "mode": "RGB", "resize": [224, 224], "scale": 1/255,
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "layout": "NCHW", "dtype": "float32"}

Every image is decoded with Pillow into one preallocated uint8 batch; scaling, normalisation and the
layout change then run once, vectorised, over the whole batch.

``{"decode": "bytes"}`` feeds the raw bytes themselves, as a uint8 [N, length] batch (every value
of the batch must have the same length).

Output post-ops work per row on the last axis: ``"argmax"``, ``"max"``, ``"softmax"``, or
``{"op": "index", "index": i}``; a list applies several in order.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

_IMAGE_KEYS = {"decode", "mode", "resize", "scale", "mean", "std", "layout", "dtype", "flatten", "resample"}
_CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}
_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")  # Pillow names its file object


@dataclass(frozen=True)
class ImageSpec:
    """Validated image preprocessing options (see the module docstring)."""

    mode: str = "RGB"
    resize: tuple[int, int] | None = None  # (height, width)
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"
    dtype: str = "float32"
    flatten: bool = False
    resample: str = "bilinear"

    @property
    def channels(self) -> int:
        return _CHANNELS[self.mode]


def parse_image_options(options: Mapping[str, Any]) -> ImageSpec:
    """Validate image options; raise ValueError naming the offending key."""
    unknown = set(options) - _IMAGE_KEYS
    if unknown:
        raise ValueError(f"unknown image preprocessing option(s): {sorted(unknown)}")
    if options.get("decode", "image") != "image":
        raise ValueError(f"unsupported decode {options.get('decode')!r} (only 'image')")
    mode = str(options.get("mode", "RGB")).upper()
    if mode not in _CHANNELS:
        raise ValueError(f"image mode must be one of {sorted(_CHANNELS)}, not {mode!r}")
    layout = str(options.get("layout", "NCHW")).upper()
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be NCHW or NHWC, not {layout!r}")
    spec = ImageSpec(
        mode=mode,
        resize=_parse_resize(options.get("resize")),
        scale=None if options.get("scale") is None else _number(options["scale"], "scale"),
        mean=_per_channel(options.get("mean"), "mean", _CHANNELS[mode]),
        std=_per_channel(options.get("std"), "std", _CHANNELS[mode]),
        layout=layout,
        dtype=str(np.dtype(options.get("dtype", "float32"))),
        flatten=bool(options.get("flatten", False)),
        resample=str(options.get("resample", "bilinear")).lower(),
    )
    if spec.std is not None and any(s == 0 for s in spec.std):
        raise ValueError("std must not contain zeros")
    _resample_filter(spec.resample)
    return spec


def _parse_resize(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    if len(value) != 2 or any(int(v) <= 0 for v in value):
        raise ValueError(f"resize must be [height, width] of positive ints, not {value!r}")
    return (int(value[0]), int(value[1]))


def _number(value: Any, what: str) -> float:
    # JSON cannot spell 1/255 exactly, so "1/255" is accepted as a string as well.
    try:
        return float(Fraction(value)) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"{what} must be a number, not {value!r}") from exc


def _per_channel(value: Any, what: str, channels: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = (value,) if isinstance(value, int | float | str) else tuple(value)
    if len(values) not in (1, channels):
        raise ValueError(f"{what} needs 1 or {channels} values, not {len(values)}")
    return tuple(_number(v, what) for v in values)


def _resample_filter(name: str) -> int:
    from PIL import Image

    filters = {
        "nearest": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "lanczos": Image.Resampling.LANCZOS,
    }
    if name not in filters:
        raise ValueError(f"resample must be one of {sorted(filters)}, not {name!r}")
    return filters[name]


def decode_images(blobs: Sequence[bytes] | np.ndarray, options: Mapping[str, Any] | ImageSpec) -> np.ndarray:
    """Decode encoded images (PNG, JPEG, ...) into one contiguous batch tensor."""
    spec = options if isinstance(options, ImageSpec) else parse_image_options(options)
    pixels = _decode_uint8(blobs, spec)
    return _to_tensor(pixels, spec)


def _decode_uint8(blobs: Sequence[bytes] | np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Decode into an [N, H, W, C] uint8 batch allocated once."""
    from PIL import Image

    resample = _resample_filter(spec.resample)
    batch: np.ndarray | None = None
    for i, blob in enumerate(blobs):
        try:
            img = Image.open(io.BytesIO(bytes(blob)))
            img = img.convert(spec.mode)
        except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, ...
            raise ValueError(f"row {i}: cannot decode image: {image_error(exc)}") from exc
        if spec.resize is not None and img.size != (spec.resize[1], spec.resize[0]):
            img = img.resize((spec.resize[1], spec.resize[0]), resample)
        arr = np.asarray(img, dtype=np.uint8).reshape(img.size[1], img.size[0], spec.channels)
        if batch is None:
            batch = np.empty((len(blobs), *arr.shape), dtype=np.uint8)
        elif arr.shape != batch.shape[1:]:
            raise ValueError(
                f"row {i}: image is {arr.shape[:2]}, earlier rows {batch.shape[1:3]}; set resize"
            )
        batch[i] = arr
    if batch is None:
        h, w = spec.resize or (0, 0)
        batch = np.empty((0, h, w, spec.channels), dtype=np.uint8)
    return batch


def image_error(exc: Exception) -> str:
    """Why Pillow could not decode an image, in words fit for a user (no object addresses)."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not a recognized image format"
    text = _OBJECT_REPR.sub("", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def find_undecodable(
    blobs: Sequence[bytes | None], options: Mapping[str, Any] | ImageSpec, *, full: bool = True
) -> tuple[int, str] | None:
    """The first blob that is not a decodable image, and why; None when every one is.

    ``full=False`` reads headers only (Pillow opens lazily: format, size, mode), cheap enough to
    run on every batch before it goes to a worker; ``full=True`` decodes the pixels too, which
    finds the truncated or corrupt images a header check lets through."""
    from PIL import Image

    spec = options if isinstance(options, ImageSpec) else parse_image_options(options)
    for i, blob in enumerate(blobs):
        if blob is None:
            return i, "the image is NULL"
        try:
            img = Image.open(io.BytesIO(bytes(blob)))
            if full:
                img.convert(spec.mode)
        except Exception as exc:  # as in _decode_uint8
            return i, image_error(exc)
    return None


def _to_tensor(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    out = pixels.astype(spec.dtype)
    if spec.scale is not None:
        out *= np.asarray(spec.scale, dtype=out.dtype)
    if spec.mean is not None:
        out -= np.asarray(spec.mean, dtype=out.dtype)
    if spec.std is not None:
        out /= np.asarray(spec.std, dtype=out.dtype)
    if spec.layout == "NCHW":
        out = out.transpose(0, 3, 1, 2)
    if spec.flatten:
        out = out.reshape(out.shape[0], -1)
    return np.ascontiguousarray(out)


def decode_bytes(blobs: Sequence[bytes] | np.ndarray) -> np.ndarray:
    """Raw bytes as one uint8 [N, length] batch."""
    if len(blobs) == 0:
        return np.empty((0, 0), dtype=np.uint8)
    length = len(blobs[0])
    out = np.empty((len(blobs), length), dtype=np.uint8)
    for i, blob in enumerate(blobs):
        if len(blob) != length:
            raise ValueError(f"row {i}: {len(blob)} bytes, earlier rows {length}: lengths must agree")
        out[i] = np.frombuffer(bytes(blob), dtype=np.uint8)
    return out


def check_preprocess(options: Mapping[str, Any]) -> None:
    """Raise ValueError when one input's preprocessing options are not valid."""
    decode = options.get("decode")
    if decode == "image":
        parse_image_options(options)
    elif decode == "bytes":
        extra = sorted(set(options) - {"decode"})
        if extra:
            raise ValueError(f'decode "bytes" takes no other options, not {extra}')
    else:
        raise ValueError(f"unsupported decode {decode!r} (use 'image' or 'bytes')")


def preprocess_input(values: Any, options: Mapping[str, Any]) -> np.ndarray:
    """Apply one input's preprocessing options (``decode``: ``image`` or ``bytes``)."""
    if options.get("decode") == "image":
        return decode_images(values, options)
    if options.get("decode") == "bytes":
        return decode_bytes(values)
    raise ValueError(f"unsupported preprocessing options {dict(options)!r}")


# ---------------------------------------------------------------------------------------------
# Output post-processing


def apply_post_ops(array: np.ndarray, ops: Any) -> np.ndarray:
    """Apply post-ops per row, over the last axis (see the module docstring)."""
    for op in ops if isinstance(ops, list | tuple) else [ops]:
        array = _apply_one(np.asarray(array), op)
    return array


def _apply_one(array: np.ndarray, op: Any) -> np.ndarray:
    name = op if isinstance(op, str) else op.get("op")
    if array.ndim < 2 and name != "index":
        raise ValueError(f"post-op {name!r} needs a vector per row, got shape {array.shape}")
    if name == "argmax":
        return array.argmax(axis=-1)
    if name == "max":
        return array.max(axis=-1)
    if name == "softmax":
        shifted = array - array.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=-1, keepdims=True)
    if name == "index":
        if isinstance(op, str) or "index" not in op:
            raise ValueError('post-op "index" needs {"op": "index", "index": i}')
        return np.ascontiguousarray(array[..., int(op["index"])])
    raise ValueError(f"unknown post-op {op!r}")


def zipmap_to_array(maps: Sequence[Mapping[Any, float]]) -> tuple[np.ndarray, list[Any]]:
    """A ZipMap output (one {label: probability} per row) as an [N, classes] array.

    Columns are ordered by sorted class label, which is the order skl2onnx uses for
    ``zipmap=False`` too; the labels are returned alongside.
    """
    if len(maps) == 0:
        return np.empty((0, 0), dtype=np.float32), []
    labels = sorted(maps[0])
    out = np.empty((len(maps), len(labels)), dtype=np.float32)
    for i, row in enumerate(maps):
        out[i] = [row[k] for k in labels]
    return out, labels
