"""Exceptions raised by the inference layer.

All derive from :class:`InferenceLayerError` so callers (the planner) can catch the family at once.
"""

from __future__ import annotations


class InferenceLayerError(Exception):
    """Base class of every error raised by ``inference``."""


class ModelNotFoundError(InferenceLayerError, FileNotFoundError):
    """The model file does not exist."""


class ModelLoadError(InferenceLayerError):
    """The model file exists but is not a loadable ONNX model."""


class InferenceError(InferenceLayerError):
    """ONNX Runtime rejected a batch (bad shape, wrong type, ...); the worker survives."""


class WorkerCrashedError(InferenceLayerError):
    """The worker process died while it held the request; the pool restarts it."""


class PoolClosedError(InferenceLayerError):
    """The pool is closed (or was never started)."""
