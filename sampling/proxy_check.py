"""Proxy sanity: measure a proxy against labels a query already has, and say whether flipping it
(using 1 - score) keeps the selection operators' guarantees.

Contract (the planner's):

* :func:`check_proxy_ranking` is pure: proxy scores of labelled rows, their 0/1 labels and
  (optionally) the importance weights that make them represent the table in; a
  :class:`~sampling.results.ProxyCheck` out. It spends no oracle call and no δ: its verdict is a
  diagnostic for NOTICEs and planning decisions, never part of a certified claim.
* :func:`advise_flip` decides whether a reversed proxy may be flipped without voiding the
  guarantee. The operators' guarantees hold for any proxy fixed before their own random draws.
  A proxy chosen from labels that are independent of those draws (e.g. a small uniform pilot
  the bound does not reuse, or labels from an earlier query) is such a proxy: conditional on
  those labels the flipped proxy is fixed, so every claim holds conditionally and hence
  unconditionally. If the bound reuses the deciding labels as statistical draws (its sample is
  the one that chose the proxy, and under the other proxy's design), the claim is not covered.
  Labels reused only as exact facts (a verified row counted as known, e.g. a census of the top
  rows) carry no sampling error and keep the guarantee.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .results import FlipAdvice, ProxyCheck
from .validation import check_confidence, check_proxy

Reuse = Literal["none", "exact", "statistical"]

_BOOTSTRAP = 400
_MIN_PER_CLASS = 2


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties half, rows weighted by ``weights``."""
    pos, neg = labels == 1, labels == 0
    s_neg, w_neg = scores[neg], weights[neg]
    order = np.argsort(s_neg, kind="stable")
    s_neg, cw = s_neg[order], np.concatenate([[0.0], np.cumsum(w_neg[order])])
    lo = np.searchsorted(s_neg, scores[pos], side="left")
    hi = np.searchsorted(s_neg, scores[pos], side="right")
    beaten = cw[lo] + 0.5 * (cw[hi] - cw[lo])
    total = weights[pos].sum() * cw[-1]
    return float(np.dot(weights[pos], beaten) / total) if total > 0 else float("nan")


def check_proxy_ranking(
    scores: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    confidence: float = 0.95,
    seed: int = 0,
) -> ProxyCheck:
    """Verdict on a proxy from rows already labelled (see the module docstring for the contract).

    ``weights`` (default: equal) should be the importance weights of the draws when the labelled
    rows were drawn with unequal probabilities, so that the AUC describes the whole table. The
    interval is a percentile bootstrap over the labelled rows (``seed`` fixes it).
    """
    conf = check_confidence(confidence)
    s = check_proxy(scores)
    y = np.asarray(labels).astype(np.int64).ravel()
    w = np.ones(s.size) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if y.size != s.size or w.size != s.size:
        raise ValueError(f"scores, labels and weights differ in length: {s.size}, {y.size}, {w.size}")
    if np.any((y != 0) & (y != 1)) or np.any(w < 0):
        raise ValueError("labels must be 0/1 and weights non-negative")
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if min(n_pos, n_neg) < _MIN_PER_CLASS:
        return ProxyCheck(
            "uninformative",
            float("nan"),
            0.0,
            1.0,
            n_pos,
            n_neg,
            conf,
            f"too few labelled rows of one class to measure ({n_pos} positive, {n_neg} negative)",
        )
    auc = weighted_auc(s, y, w)
    rng = np.random.default_rng(seed)
    boots = np.array([_resampled_auc(s, y, w, rng) for _ in range(_BOOTSTRAP)])
    boots = boots[np.isfinite(boots)]
    alpha = 1.0 - conf
    lo, hi = (float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2)))
    if lo > 0.5:
        verdict, reason = "informative", f"AUC {auc:.3f}, interval above 0.5"
    elif hi < 0.5:
        verdict, reason = "reversed", f"AUC {auc:.3f}: the proxy scores negatives above positives"
    else:
        verdict, reason = "uninformative", f"AUC {auc:.3f}: the interval contains 0.5 (no better than chance)"
    return ProxyCheck(verdict, auc, lo, hi, n_pos, n_neg, conf, reason)


def _resampled_auc(s: np.ndarray, y: np.ndarray, w: np.ndarray, rng: np.random.Generator) -> float:
    idx = rng.integers(0, s.size, s.size)
    if y[idx].min() == y[idx].max():
        return float("nan")
    return weighted_auc(s[idx], y[idx], w[idx])


def advise_flip(check: ProxyCheck, reuse: Reuse) -> FlipAdvice:
    """Flip (use 1 - score) only a reversed proxy, and say whether the guarantee survives.

    ``reuse``: how the bound of the query that would use the flipped proxy uses the labels that
    made ``check``: ``"none"`` (fresh, independent draws: keeps), ``"exact"`` (only as verified
    facts: keeps), ``"statistical"`` (as part of its random sample: does not keep; draw anew
    or keep the proxy as it is).
    """
    if reuse not in ("none", "exact", "statistical"):
        raise ValueError(f"reuse must be 'none', 'exact' or 'statistical', got {reuse!r}")
    if check.verdict != "reversed":
        return FlipAdvice(False, True, f"proxy is {check.verdict}: nothing to flip")
    if reuse == "statistical":
        return FlipAdvice(
            False,
            False,
            "the bound would reuse as random draws the labels that chose the flip; flip only with "
            "fresh draws (the proxy stays as it is)",
        )
    return FlipAdvice(
        True,
        True,
        "flipped on labels independent of the bound's draws: conditional on them the proxy is "
        "fixed, so the guarantee holds",
    )
