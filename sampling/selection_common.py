"""Helpers shared by the selection operators: labelling by position and assembling the answer."""

from __future__ import annotations

import numpy as np

from .importance import RankedProxy
from .oracle import BudgetedOracle


def labels_of(bo: BudgetedOracle, rows: np.ndarray) -> np.ndarray:
    """Oracle labels as 0/1 ints (the first component if the oracle returns a tuple)."""
    if rows.size == 0:
        return np.zeros(0, dtype=np.int64)
    ans = bo(rows)
    if isinstance(ans, tuple):
        ans = ans[0]
    arr = np.asarray(ans)
    if arr.dtype != bool and not np.all((arr == 0) | (arr == 1)):
        raise ValueError("a selection oracle must return 0/1 (or boolean) labels")
    return arr.astype(np.int64)


def label_positions_in_order(bo: BudgetedOracle, rp: RankedProxy, start: int, stop: int, limit: int) -> int:
    """Label up to ``limit`` not-yet-labelled rows among positions [start, stop), best proxy first."""
    done = 0
    pos = start
    while done < limit and pos < stop:
        chunk = rp.order[pos : min(stop, pos + max(4 * (limit - done), 256))]
        fresh = chunk[~bo.is_labelled(chunk)][: limit - done]
        if fresh.size:
            labels_of(bo, fresh)
            done += int(fresh.size)
        pos += chunk.size
    return done


def labelled_sets(bo: BudgetedOracle) -> tuple[np.ndarray, np.ndarray]:
    """(positive rows, negative rows) among everything the oracle has labelled."""
    idx = bo.labelled_indices()
    y = labels_of(bo, idx)
    return idx[y == 1], idx[y == 0]


def assemble(bo: BudgetedOracle, rp: RankedProxy, accept_from: int, accept_to: int) -> np.ndarray:
    """Rows at positions [accept_from, accept_to), minus verified negatives, plus verified positives."""
    mask = np.zeros(rp.n, dtype=bool)
    mask[rp.order[accept_from:accept_to]] = True
    pos, neg = labelled_sets(bo)
    mask[neg] = False
    mask[pos] = True
    return np.flatnonzero(mask)


def positions_at_least(rp: RankedProxy, tau: float | None) -> int:
    """Length of the prefix of positions whose proxy is >= tau (None = every row)."""
    return rp.n if tau is None else int(rp.count_at_least(tau))
