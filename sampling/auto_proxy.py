"""Build a proxy when the query names none: logistic regression on cheap per-row features.

A stated fraction of the budget labels a uniform random sample; an L2-regularised logistic
regression (numpy/scipy, no scikit-learn) is fitted to it and scores every row. The guarantee is
not computed from these labels: the operator that uses the proxy draws its own fresh samples
from the remaining budget, and is valid conditionally on the proxy (which is all the training
labels influence). Re-asking a training row is free (it is cached in the returned oracle), and
verified training positives may still be returned as verified rows.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

from .oracle import BudgetedOracle, Oracle, as_budgeted
from .results import AutoProxy
from .selection_common import labels_of
from .validation import check_budget, check_unit_interval


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, max_iter: int = 500
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Fit P(y=1|x) = sigmoid(z·coef + intercept) on standardised features z = (x - mean)/scale.

    Returns (coef, intercept, mean, scale). ``l2`` penalises the coefficients (not the intercept).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - mean) / scale
    d = z.shape[1]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef, b = theta[:d], theta[d]
        t = z @ coef + b
        # log(1 + e^t) - y t, computed stably
        nll = float(np.sum(np.logaddexp(0.0, t) - y * t)) + 0.5 * l2 * float(coef @ coef)
        r = special.expit(t) - y
        grad = np.concatenate([z.T @ r + l2 * coef, [r.sum()]])
        return nll, grad

    res = optimize.minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return res.x[:d], float(res.x[d]), mean, scale


def predict_logistic(
    x: np.ndarray, coef: np.ndarray, intercept: float, mean: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    return special.expit(((np.asarray(x, dtype=np.float64) - mean) / scale) @ coef + intercept)


def train_proxy(
    features: np.ndarray,
    oracle: Oracle | BudgetedOracle,
    *,
    budget: int,
    rng: np.random.Generator,
    train_fraction: float = 0.2,
    l2: float = 1.0,
) -> tuple[AutoProxy, BudgetedOracle]:
    """Spend ``train_fraction`` of ``budget`` on a uniform sample, fit a logistic proxy, score
    every row. Returns the proxy and the budgeted oracle to hand to the operator (with the same
    ``budget``: the training calls already count against it).
    """
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array (rows x features), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError("features is empty")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise ValueError("features must be finite numbers")
    budget = check_budget(budget)
    frac = check_unit_interval("train_fraction", train_fraction, allow_one=False)
    bo = as_budgeted(oracle, budget)
    n_rows = x.shape[0]
    n_train = min(n_rows, bo.remaining, max(1, int(frac * budget)))
    idx = np.sort(rng.choice(n_rows, size=n_train, replace=False))
    y = labels_of(bo, idx)
    if y.min() == y.max():
        # one class only: no signal to learn; a constant proxy keeps the operators valid
        const = float(np.clip(y.mean(), 0.0, 1.0))
        scores = np.full(n_rows, const)
        coef, intercept = np.zeros(x.shape[1]), float("nan")
    else:
        coef, intercept, mean, scale = fit_logistic(x[idx], y, l2=l2)
        scores = predict_logistic(x, coef, intercept, mean, scale)
    proxy = AutoProxy(
        scores=np.clip(scores, 0.0, 1.0),
        train_indices=idx,
        train_labels=y,
        oracle_calls=bo.calls,
        coef=coef,
        intercept=intercept,
        train_fraction=frac,
    )
    return proxy, bo
