"""Proxy ranking and the importance-sampling design used by the selection operators.

Rows are handled by their *position* in descending proxy order, so "rows with proxy >= t" is a
prefix and the rows left after a take-all head are a suffix. The sampling distribution over a
suffix is the SUPG one: q ∝ sqrt(proxy), mixed with uniform (defensive mixing) so that every row
has probability at least ``mix / size`` and every importance weight is at most ``1 / mix``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .validation import check_proxy, check_unit_interval


@dataclass(frozen=True)
class RankedProxy:
    """Validated proxy scores with their descending order (sort once, reuse across queries)."""

    scores: np.ndarray
    order: np.ndarray
    rank: np.ndarray
    desc: np.ndarray
    sqrt_csum: np.ndarray

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def count_at_least(self, t: float | np.ndarray) -> np.ndarray | int:
        """Number of rows with proxy >= t (i.e. the length of that prefix of positions)."""
        asc = self.desc[::-1]
        out = self.n - np.searchsorted(asc, t, side="left")
        return int(out) if np.ndim(out) == 0 else out


def rank_proxy(proxy: np.ndarray) -> RankedProxy:
    """Validate proxy scores (finite, in [0, 1]) and sort them once."""
    scores = check_proxy(proxy)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    desc = scores[order]
    sqrt_csum = np.concatenate([[0.0], np.cumsum(np.sqrt(desc))])
    return RankedProxy(scores=scores, order=order, rank=rank, desc=desc, sqrt_csum=sqrt_csum)


def as_ranked(proxy: np.ndarray | RankedProxy) -> RankedProxy:
    return proxy if isinstance(proxy, RankedProxy) else rank_proxy(proxy)


@dataclass(frozen=True)
class SuffixDesign:
    """Sampling distribution over positions ``start .. n-1`` (a suffix in descending order)."""

    rp: RankedProxy
    start: int
    mix: float

    @property
    def size(self) -> int:
        return self.rp.n - self.start

    @property
    def _sqrt_total(self) -> float:
        return float(self.rp.sqrt_csum[-1] - self.rp.sqrt_csum[self.start])

    @property
    def _mix(self) -> float:
        # Without any proxy mass in the suffix the design is uniform.
        return 1.0 if self._sqrt_total <= 0 else self.mix

    def prob(self, pos: np.ndarray | int) -> np.ndarray:
        """Probability that one draw lands on each position in ``pos``."""
        mix = self._mix
        sq = np.sqrt(self.rp.desc[pos])
        total = self._sqrt_total
        part = (1.0 - mix) * sq / total if total > 0 else 0.0 * sq
        return part + mix / self.size

    def weight(self, pos: np.ndarray | int) -> np.ndarray:
        """Importance weight (uniform over the suffix) / q; mean 1 under q."""
        return 1.0 / (self.size * self.prob(pos))

    @property
    def max_weight(self) -> float:
        """Largest weight in the suffix: the lowest-proxy row (weights grow with position)."""
        return float(self.weight(self.rp.n - 1))

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent positions drawn from the design."""
        if n <= 0 or self.size <= 0:
            return np.empty(0, dtype=np.int64)
        mix = self._mix
        uniform = rng.random(n) < mix
        out = np.empty(n, dtype=np.int64)
        k = int(uniform.sum())
        out[uniform] = self.start + np.minimum((rng.random(k) * self.size).astype(np.int64), self.size - 1)
        if n - k:
            cs = self.rp.sqrt_csum
            target = cs[self.start] + rng.random(n - k) * self._sqrt_total
            pos = np.searchsorted(cs, target, side="right") - 1
            out[~uniform] = np.clip(pos, self.start, self.rp.n - 1)
        return out


def take_all_head(rp: RankedProxy, n_total: int, mix: float) -> int:
    """Size of the take-all stratum for ``n_total`` labels (survey practice for PPS designs).

    A top row that ``n_draws`` draws would be expected to hit at least once (n_draws * q >= 1)
    is labelled outright instead: its label becomes exact and no budget is wasted on repeats.
    Iterated because moving rows into the head changes the suffix design.
    """
    check_unit_interval("mix", mix)
    head = 0
    while head < rp.n:
        n_draws = n_total - head
        if n_draws <= 0:
            break
        design = SuffixDesign(rp, head, mix)
        top = np.arange(head, min(rp.n, head + n_draws))
        expected = n_draws * design.prob(top)
        # expected hits decrease with position, so the qualifying rows form a prefix
        extra = int(np.searchsorted(-expected, -1.0, side="right"))
        if extra == 0:
            break
        head += extra
    return head
