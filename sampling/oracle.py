"""Budget-enforcing, caching wrapper around the (expensive) oracle callable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Oracle = Callable[[np.ndarray], Any]


class BudgetExceededError(RuntimeError):
    """Raised before the oracle would be asked about more distinct rows than the budget allows."""


class BudgetedOracle:
    """Counts distinct labelled rows, caches their answers, and refuses to exceed ``budget``.

    The wrapped oracle takes an int array of row indices and returns either one array (labels or
    values) or a tuple of equally long arrays (e.g. ``(matches, values, groups)``). Asking again
    about a labelled row is free. ``calls`` is the number of distinct rows labelled so far.
    """

    def __init__(self, oracle: Oracle, budget: int) -> None:
        if isinstance(oracle, BudgetedOracle):
            raise TypeError("oracle is already a BudgetedOracle; use it directly")
        if int(budget) != budget or budget <= 0:
            raise ValueError(f"budget must be a positive integer, got {budget!r}")
        self._oracle = oracle
        self.budget = int(budget)
        self._pos: dict[int, int] = {}
        self._index = np.empty(64, dtype=np.int64)
        self._cols: list[np.ndarray] | None = None
        self._tuple = False

    @property
    def calls(self) -> int:
        return len(self._pos)

    @property
    def remaining(self) -> int:
        return self.budget - len(self._pos)

    def labelled_indices(self) -> np.ndarray:
        """Row indices labelled so far, in labelling order."""
        return self._index[: len(self._pos)].copy()

    def is_labelled(self, idx: np.ndarray) -> np.ndarray:
        return np.fromiter((int(i) in self._pos for i in np.ravel(idx)), dtype=bool, count=np.size(idx))

    def new_count(self, idx: np.ndarray) -> int:
        """How many distinct rows of ``idx`` would be charged if asked now."""
        return sum(1 for i in np.unique(np.asarray(idx, dtype=np.int64)) if int(i) not in self._pos)

    def cached(self, idx: np.ndarray) -> Any:
        """Answers for already-labelled rows (KeyError for a row never labelled)."""
        idx = np.asarray(idx, dtype=np.int64).ravel()
        positions = np.fromiter((self._pos[int(i)] for i in idx), dtype=np.int64, count=idx.size)
        return self._gather(positions)

    def __call__(self, idx: np.ndarray) -> Any:
        idx = np.asarray(idx, dtype=np.int64).ravel()
        uniq = np.unique(idx)
        new = np.fromiter((i for i in uniq.tolist() if i not in self._pos), dtype=np.int64)
        if new.size:
            if len(self._pos) + new.size > self.budget:
                raise BudgetExceededError(
                    f"oracle budget {self.budget} exceeded: {len(self._pos)} rows labelled, "
                    f"{new.size} more requested"
                )
            self._store(new, self._oracle(new))
        return self.cached(idx)

    def _store(self, new: np.ndarray, answer: Any) -> None:
        self._tuple = isinstance(answer, tuple)
        parts = [np.asarray(a) for a in (answer if self._tuple else (answer,))]
        for p in parts:
            if p.shape[:1] != (new.size,):
                raise ValueError(f"oracle returned {p.shape[:1]} answers for {new.size} rows")
        start = len(self._pos)
        stop = start + new.size
        if self._cols is None:
            cap = max(64, 2 * new.size)
            self._cols = [np.empty((cap,) + p.shape[1:], dtype=p.dtype) for p in parts]
        if stop > self._cols[0].shape[0] or stop > self._index.size:
            cap = max(2 * self._cols[0].shape[0], stop)
            self._cols = [_grow(c, cap) for c in self._cols]
            self._index = _grow(self._index, cap)
        for j, p in enumerate(parts):
            if not np.can_cast(p.dtype, self._cols[j].dtype, casting="same_kind"):
                self._cols[j] = self._cols[j].astype(np.result_type(self._cols[j].dtype, p.dtype))
            self._cols[j][start:stop] = p
        self._index[start:stop] = new
        for k, i in enumerate(new.tolist()):
            self._pos[i] = start + k

    def _gather(self, positions: np.ndarray) -> Any:
        if self._cols is None:
            empty = np.empty(0)
            return (empty,) if self._tuple else empty
        out = tuple(c[positions] for c in self._cols)
        return out if self._tuple else out[0]


def _grow(a: np.ndarray, cap: int) -> np.ndarray:
    out = np.empty((cap,) + a.shape[1:], dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def as_budgeted(oracle: Oracle | BudgetedOracle, budget: int) -> BudgetedOracle:
    """Wrap ``oracle``; an existing BudgetedOracle is reused (its earlier calls count) and capped."""
    if isinstance(oracle, BudgetedOracle):
        if budget < oracle.budget:
            oracle.budget = max(int(budget), oracle.calls)
        return oracle
    return BudgetedOracle(oracle, budget)
