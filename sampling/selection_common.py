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


def verified_precision(bo: BudgetedOracle, indices: np.ndarray) -> float:
    """Share of ``indices`` the oracle verified as positive: a precision lower bound that holds
    with probability 1 (an empty answer makes no false claim and counts as 1)."""
    if indices.size == 0:
        return 1.0
    pos, _ = labelled_sets(bo)
    return float(np.count_nonzero(np.isin(indices, pos)) / indices.size)


def first_missable_position(
    bo: BudgetedOracle, rp: RankedProxy, indices: np.ndarray, start: int
) -> int | None:
    """Smallest position >= ``start`` holding a row that is neither returned nor labelled.

    Positives can be missed only at such rows (verified positives are always returned), so the
    answer misses no more than a threshold just above that row's proxy would. None: no row can
    be missed (recall is exactly 1).
    """
    candidate = np.ones(rp.n, dtype=bool)
    candidate[indices] = False
    candidate[bo.labelled_indices()] = False
    pos = np.flatnonzero(candidate[rp.order[start:]])
    return None if pos.size == 0 else int(start + pos[0])


# How each requested bound is named in ``details["claims"]`` (what a claim actually rests on).
BOUND_NAMES = {
    "betting": "betting (finite-sample)",
    "bernstein": "empirical Bernstein with the known range (finite-sample)",
    "hoeffding": "Hoeffding (finite-sample)",
    "empirical": "empirical Bernstein with the observed range (approximate)",
    "normal": "normal / CLT (approximate)",
}
