"""Proxy-ordered LIMIT: label rows in descending proxy order until k positives are found."""

from __future__ import annotations

import numpy as np

from .oracle import BudgetedOracle, Oracle, as_budgeted
from .results import LimitResult
from .selection_common import labels_of
from .validation import check_budget, check_positive_int, check_proxy


def limit_search(
    proxy: np.ndarray,
    oracle: Oracle | BudgetedOracle,
    *,
    k: int,
    rng: np.random.Generator,
    budget: int | None = None,
    batch_size: int = 64,
) -> LimitResult:
    """The first ``k`` oracle-verified positives in descending proxy order (exact rows, no
    approximation). Ties in the proxy are broken at random with ``rng``. Stops early; the oracle
    sees at most ``budget`` distinct rows (default: no limit beyond the table size).
    """
    scores = check_proxy(proxy)
    k = check_positive_int("k", k)
    batch_size = check_positive_int("batch_size", batch_size)
    budget = scores.size if budget is None else check_budget(budget)
    bo = as_budgeted(oracle, budget)
    # random tie-break: sort by (-score, random key)
    order = np.lexsort((rng.random(scores.size), -scores))
    found: list[np.ndarray] = []
    n_found = 0
    start = 0
    out_of_budget = False
    while n_found < k and start < order.size and not out_of_budget:
        chunk = order[start : start + batch_size]
        start += chunk.size
        # already-labelled rows are free; cut the batch where new rows would exceed the budget
        fresh = np.cumsum(~bo.is_labelled(chunk))
        keep = int(np.searchsorted(fresh, bo.remaining, side="right"))
        if keep < chunk.size:
            out_of_budget = True
            start -= chunk.size - keep
            chunk = chunk[:keep]
        if chunk.size == 0:
            continue
        hits = chunk[labels_of(bo, chunk) == 1][: k - n_found]
        found.append(hits)
        n_found += int(hits.size)
    indices = np.concatenate(found) if found else np.empty(0, dtype=np.int64)
    exhausted = n_found < k
    hint = None
    if exhausted and start < order.size:
        hint = f"budget of {budget} labels ran out after {n_found} of {k} positives; raise the budget"
    return LimitResult(
        indices=indices, oracle_calls=bo.calls, k=k, found=n_found, exhausted=exhausted, budget_hint=hint
    )
