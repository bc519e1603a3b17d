"""SieveDB inference: ONNX models in worker processes, tensors in, tensors out.

Nothing here knows about SQL. The planner builds a ``ModelRef`` per model function and awaits
``InferencePool.infer``; ``load_signature`` describes a model file at registration time.

Names are imported lazily so that a worker process (which imports ``inference.worker``) does not
pay for asyncio, onnx or the pool machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "InferencePool": "inference.pool",
    "ModelRef": "inference.model",
    "ModelStats": "inference.stats",
    "WorkerInfo": "inference.handle",
    "default_worker_count": "inference.devices",
    "load_signature": "inference.signature",
    "file_sha256": "inference.signature",
    "ModelSignature": "inference.signature",
    "TensorInfo": "inference.signature",
    "decode_images": "inference.preprocess",
    "apply_post_ops": "inference.preprocess",
    "zipmap_to_array": "inference.preprocess",
    "InferenceLayerError": "inference.errors",
    "InferenceError": "inference.errors",
    "ModelLoadError": "inference.errors",
    "ModelNotFoundError": "inference.errors",
    "WorkerCrashedError": "inference.errors",
    "PoolClosedError": "inference.errors",
}

__all__ = [
    "InferenceError",
    "InferenceLayerError",
    "InferencePool",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelRef",
    "ModelSignature",
    "ModelStats",
    "PoolClosedError",
    "TensorInfo",
    "WorkerCrashedError",
    "WorkerInfo",
    "apply_post_ops",
    "decode_images",
    "default_worker_count",
    "file_sha256",
    "load_signature",
    "zipmap_to_array",
]

if TYPE_CHECKING:
    from inference.devices import default_worker_count
    from inference.errors import (
        InferenceError,
        InferenceLayerError,
        ModelLoadError,
        ModelNotFoundError,
        PoolClosedError,
        WorkerCrashedError,
    )
    from inference.handle import WorkerInfo
    from inference.model import ModelRef
    from inference.pool import InferencePool
    from inference.preprocess import apply_post_ops, decode_images, zipmap_to_array
    from inference.signature import ModelSignature, TensorInfo, file_sha256, load_signature
    from inference.stats import ModelStats


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
