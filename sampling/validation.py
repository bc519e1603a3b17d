"""Argument checks shared by the operators; every failure is a ValueError with a clear message."""

from __future__ import annotations

import numbers

import numpy as np


def check_fraction(name: str, value: float) -> float:
    """A target such as recall 0.9: strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}")
    return float(value)


def check_confidence(confidence: float) -> float:
    """Confidence 1 - delta: above 0.5 (else the guarantee is vacuous) and below 1."""
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real):
        raise ValueError(f"confidence must be a number in (0.5, 1), got {confidence!r}")
    if not np.isfinite(confidence) or not 0.5 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be strictly between 0.5 and 1, got {confidence!r}")
    return float(confidence)


def check_budget(budget: int) -> int:
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral | float):
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    if int(budget) != budget or budget <= 0:
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    return int(budget)


def check_proxy(proxy: np.ndarray, n_rows: int | None = None) -> np.ndarray:
    """Proxy scores: a 1-D array of finite floats in [0, 1]."""
    arr = np.asarray(proxy)
    if arr.ndim != 1:
        raise ValueError(f"proxy must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("proxy is empty")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"proxy must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError("proxy scores must be finite (found NaN or inf)")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"proxy scores must lie in [0, 1], got range [{lo}, {hi}]")
    if n_rows is not None and arr.size != n_rows:
        raise ValueError(f"proxy has {arr.size} scores but the table has {n_rows} rows")
    return arr


def check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_unit_interval(
    name: str, value: float, *, allow_zero: bool = False, allow_one: bool = True
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    v = float(value)
    if v < 0 or v > 1 or (v == 0 and not allow_zero) or (v == 1 and not allow_one):
        raise ValueError(f"{name} out of range: {value!r}")
    return v
