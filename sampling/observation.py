"""Learned observation assertions: fit the distribution of observations' features, flag unlikely ones.

Method ("kde", the only one): per group, a Gaussian kernel density estimate over the joint
features (``scipy.stats.gaussian_kde``, Scott's bandwidth). Features are standardised per group
first (mean, sample standard deviation), then rotated onto the group's principal axes; axes with
no spread (a constant feature, or features that are exact functions of each other) are dropped
from the KDE instead of making its covariance singular, and a point that leaves such an axis
(say a third wheel on a constant-two-wheel class) has density zero. Rotation does not change the
KDE: a Gaussian KDE with the data's own covariance is affine-equivariant.

Severity is a calibrated unlikelihood. Each group keeps the leave-one-out log densities of its
fitted rows (an outlier's own kernel must not explain it away). For a point with density f:
  p = (#{fitted rows with LOO density <= f} + 1) / (n_fit + 1)   for a new point,
  p = #{fitted rows with LOO density <= f} / n_fit               for a fitted row (f is its LOO),
and severity = 1 - p: a conformal tail probability, so under exchangeability P(severity >= s) is
at most 1 - s (ties make it smaller), and 0.99 means "less likely than 99% of its group".

Groups with fewer than ``min_group`` usable rows, and groups unseen at fit time, use the pooled
model (all usable rows, groups ignored). Rows with a NaN or infinite feature are left out of the
fit and get severity NaN (abstain). Each fit uses at most ``max_fit`` rows per group (a seeded
uniform subsample; 5,000 by default), which bounds the cost at n_rows x max_fit kernel terms.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from scipy import special, stats

log = logging.getLogger(__name__)

METHODS = ("kde",)
_CHUNK = 20_000  # evaluation rows per kernel call: bounds memory, not results
_UNDERFLOW = 1e-250  # below this a plain density loses digits: recompute it in log space
_REL_SPREAD = 1e-9  # an axis with variance below this share of the total is "no spread"


@dataclass(frozen=True)
class GroupDensity:
    """One fitted group (or the pooled fallback): the standardisation, the KDE and its reference."""

    n_rows: int  # usable rows of the group (finite features)
    n_fit: int  # rows the KDE holds (at most max_fit)
    mean: np.ndarray  # (d,) per-feature centre
    scale: np.ndarray  # (d,) per-feature standard deviation (1-ish for constant features)
    axes: np.ndarray  # (d, k) principal axes with spread; the KDE lives in these k coordinates
    flat_axes: np.ndarray  # (d, d - k) axes without spread: leaving them means density zero
    flat_tol: np.ndarray  # (d - k,) how far along a flat axis still counts as on it
    kde: stats.gaussian_kde | None  # None when k == 0 (every feature constant)
    reference: np.ndarray  # sorted leave-one-out log densities of the fitted rows
    fitted: Mapping[bytes, float] = field(repr=False)  # fitted row's bytes -> its LOO log density


@dataclass(frozen=True)
class ObservationModel:
    """What :func:`fit_observations` learned: a density per group plus a pooled fallback."""

    method: str
    n_features: int
    min_group: int
    max_fit: int
    pooled: GroupDensity | None  # None when fewer than 2 usable rows
    groups: Mapping[object, GroupDensity]  # groups with at least min_group usable rows
    fallback: tuple[object, ...]  # groups seen at fit time that use the pooled model


def fit_observations(
    features: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    method: str = "kde",
    min_group: int = 20,
    max_fit: int = 5_000,
    seed: int = 0,
) -> ObservationModel:
    """Fit a density of ``features`` (n rows x d, or n values for d = 1) per group and pooled."""
    if method not in METHODS:
        raise ValueError(f"unknown observation method {method!r}; expected one of {METHODS}")
    if min_group < 2 or max_fit < 2:
        raise ValueError("min_group and max_fit must be at least 2")
    x = _as_matrix(features)
    keys = _group_keys(groups, x.shape[0])
    usable = np.isfinite(x).all(axis=1)
    rng = np.random.default_rng(seed)
    pooled = _fit_group(x[usable], max_fit, rng) if usable.sum() >= 2 else None
    fitted: dict[object, GroupDensity] = {}
    fallback: list[object] = []
    for key, rows in _rows_by_group(keys).items():
        rows = rows[usable[rows]]
        if rows.size >= min_group:
            fitted[key] = _fit_group(x[rows], max_fit, rng)
        else:
            fallback.append(key)
    if fallback:
        log.info("%d group(s) below %d usable rows use the pooled model", len(fallback), min_group)
    return ObservationModel(
        method, x.shape[1], min_group, max_fit, pooled, MappingProxyType(fitted), tuple(fallback)
    )


def observation_severity(
    model: ObservationModel, features: np.ndarray, groups: np.ndarray | None = None
) -> np.ndarray:
    """Severity in [0, 1) of each row under its group's model (pooled when groups is None).

    NaN where a feature is NaN or infinite, or where no model could be fitted (abstain).
    """
    x = _as_matrix(features)
    if x.shape[1] != model.n_features:
        raise ValueError(f"model was fitted on {model.n_features} feature(s), got {x.shape[1]}")
    keys = _group_keys(groups, x.shape[0])
    usable = np.isfinite(x).all(axis=1)
    out = np.full(x.shape[0], np.nan)
    for key, rows in _rows_by_group(keys).items():
        fit = model.groups.get(key, model.pooled)
        rows = rows[usable[rows]]
        if fit is not None and rows.size:
            out[rows] = _severity(fit, x[rows])
    return out


def _as_matrix(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"features must be n values or an n x d matrix, got shape {x.shape}")
    return x


def _group_keys(groups: np.ndarray | None, n: int) -> list[object]:
    if groups is None:
        return [None] * n
    keys = np.asarray(groups, dtype=object).ravel().tolist()
    if len(keys) != n:
        raise ValueError(f"groups has {len(keys)} entries for {n} rows")
    # NaN != NaN would make every NaN its own group: a missing group is one group, like None
    return [None if isinstance(k, float) and k != k else k for k in keys]


def _rows_by_group(keys: list[object]) -> dict[object, np.ndarray]:
    rows: dict[object, list[int]] = {}
    for i, key in enumerate(keys):
        rows.setdefault(key, []).append(i)
    return {key: np.asarray(idx, dtype=np.intp) for key, idx in rows.items()}


def _fit_group(x: np.ndarray, max_fit: int, rng: np.random.Generator) -> GroupDensity:
    n_rows = x.shape[0]
    if n_rows > max_fit:
        x = x[np.sort(rng.choice(n_rows, size=max_fit, replace=False))]
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1)
    # a constant feature keeps a scale in its own units, so "off the constant" is relative
    flat_feature = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
    scale = np.where(flat_feature, np.maximum(1.0, np.abs(mean)), std)
    z = (x - mean) / scale
    eigval, eigvec = np.linalg.eigh(np.cov(z, rowvar=False).reshape(x.shape[1], x.shape[1]))
    spread = eigval > _REL_SPREAD * max(float(eigval.sum()), 1e-300)
    spread &= np.arange(eigval.size) >= eigval.size - (x.shape[0] - 1)  # n points span n-1 axes
    axes, flat_axes = eigvec[:, spread], eigvec[:, ~spread]
    flat_tol = 1e-9 + 10.0 * np.abs(z @ flat_axes).max(axis=0, initial=0.0)
    proj = z @ axes
    kde = stats.gaussian_kde(proj.T, bw_method="scott") if axes.shape[1] else None
    loo = _leave_one_out(kde, proj)
    fitted = {row.tobytes(): float(v) for row, v in zip(x, loo, strict=True)}
    return GroupDensity(n_rows, x.shape[0], mean, scale, axes, flat_axes, flat_tol, kde, np.sort(loo), fitted)


def _leave_one_out(kde: stats.gaussian_kde | None, proj: np.ndarray) -> np.ndarray:
    """Log density of each fitted row under the KDE of the other rows."""
    n = proj.shape[0]
    if kde is None:
        return np.zeros(n)  # 0-dimensional: every fitted row is equally likely
    self_kernel = np.exp(-0.5 * kde.log_det)  # one kernel at distance zero
    others = kde.evaluate(proj.T) * n - self_kernel
    loo = np.full(n, -np.inf)
    clear = others > 1e-6 * self_kernel  # subtracting its own kernel kept enough digits
    loo[clear] = np.log(others[clear] / (n - 1))
    if (~clear).any():
        loo[~clear] = _exact_leave_one_out(kde, proj, np.flatnonzero(~clear))
    return loo


def _exact_leave_one_out(kde: stats.gaussian_kde, proj: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Log-space leave-one-out for isolated rows, where subtracting the own kernel cancels."""
    white = np.linalg.solve(kde.cho_cov, proj.T).T  # kernel exponent is -|white_i - white_j|^2 / 2
    out = np.empty(idx.size)
    for start in range(0, idx.size, 256):  # 256 x n_fit distances at a time
        part = idx[start : start + 256]
        sq = ((white[part, None, :] - white[None, :, :]) ** 2).sum(axis=2)
        sq[np.arange(part.size), part] = np.inf
        out[start : start + 256] = special.logsumexp(-0.5 * sq, axis=1)
    return out - 0.5 * kde.log_det - np.log(proj.shape[0] - 1)


def _log_density(fit: GroupDensity, x: np.ndarray) -> np.ndarray:
    z = (x - fit.mean) / fit.scale
    off = (np.abs(z @ fit.flat_axes) > fit.flat_tol).any(axis=1)
    if fit.kde is None:
        return np.where(off, -np.inf, 0.0)
    proj = z @ fit.axes
    out = np.empty(x.shape[0])
    for start in range(0, x.shape[0], _CHUNK):
        out[start : start + _CHUNK] = fit.kde.evaluate(proj[start : start + _CHUNK].T)
    tiny = out < _UNDERFLOW
    with np.errstate(divide="ignore"):
        out = np.log(out)
    if tiny.any():
        out[tiny] = fit.kde.logpdf(proj[tiny].T)
    out[off] = -np.inf
    return out


def _severity(fit: GroupDensity, x: np.ndarray) -> np.ndarray:
    # a fitted row is scored as it was ranked, by its leave-one-out density (and costs no kernels)
    logd = np.array([fit.fitted.get(row.tobytes(), np.nan) for row in x])
    is_fitted = ~np.isnan(logd)
    logd[~is_fitted] = _log_density(fit, x[~is_fitted])
    below = np.searchsorted(fit.reference, logd, side="right")
    new = (~is_fitted).astype(np.float64)
    return 1.0 - (below + new) / (fit.n_fit + new)
