"""Choosing which rows to label next: BAL (a bandit over model assertions), uncertainty, random.

BAL follows model assertions (Kang et al., MLSys '20): each assertion is an arm; an arm's value is
the reduction in the rows it flags per label drawn from it, estimated from the last few rounds.
Each pick is epsilon-greedy (epsilon = 0.25): with probability epsilon a uniformly random arm that
still has rows, otherwise the arm of highest value (ties, untried arms and "no arm helps" share the
greedy picks evenly). Within an arm the row of highest severity goes first. A row flagged by several
assertions is one row: once picked it leaves every arm.

Pure numpy: candidate rows, label history and confidences in; keys to label, best first, out.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

STRATEGIES = ("bal", "uncertainty", "random")
EPSILON = 0.25
# Rounds averaged for an arm's value: recent rounds describe the current model, old ones do not.
RECENT_ROUNDS = 3


@dataclass(frozen=True)
class Candidate:
    """One row flagged by one assertion; severity > 0 flags (0 abstains, and is ignored here)."""

    key: Hashable
    assertion: str
    severity: float


def choose_labels(
    candidates: Sequence[Candidate],
    n: int,
    strategy: str,
    *,
    history: Mapping[str, Sequence[tuple[int, int]]] | None = None,
    confidence: Mapping[Hashable, float] | None = None,
    all_keys: Sequence[Hashable] | None = None,
    rng: np.random.Generator,
) -> list[Hashable]:
    """Return up to ``n`` distinct keys to label, best first.

    ``history[assertion]`` lists, per past round, ``(labels_added, flags_after)``: the labels drawn
    from that assertion's flagged rows in the round and the rows it flagged after retraining. The
    first entry is the baseline (its ``labels_added`` may be 0). Fewer than ``n`` keys come back
    only when the pool is smaller: BAL proposes flagged rows only.
    """
    _check_n(n)
    if strategy == "bal":
        return _choose_bal(_flagged_by_arm(candidates), n, _arm_values(history or {}), rng)
    if strategy == "uncertainty":
        return _choose_uncertain(n, confidence, all_keys, rng)
    if strategy == "random":
        pool = _distinct(all_keys) if all_keys is not None else _distinct(c.key for c in candidates)
        picked = rng.permutation(len(pool))[:n]
        return [pool[i] for i in picked]
    raise ValueError(f"unknown labelling strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")


def arm_value(rounds: Sequence[tuple[int, int]], recent: int = RECENT_ROUNDS) -> float | None:
    """Mean flag reduction per label over the last ``recent`` rounds that drew labels, or None.

    Rounds that drew no label from the arm still move the baseline (the model changed), but give
    no per-label estimate.
    """
    rates = []
    for (_, before), (labels, after) in zip(rounds, rounds[1:], strict=False):
        _check_round(labels, after)
        if labels > 0:
            rates.append((before - after) / labels)
    if rounds:
        _check_round(*rounds[0])
    return float(np.mean(rates[-recent:])) if rates else None


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")


def _check_round(labels: int, flags: int) -> None:
    if labels < 0 or flags < 0:
        raise ValueError(f"history rounds need labels_added >= 0 and flags_after >= 0, got {(labels, flags)}")


def _distinct(keys) -> list[Hashable]:
    return list(dict.fromkeys(keys))


def _flagged_by_arm(candidates: Sequence[Candidate]) -> dict[str, list[Hashable]]:
    """Each assertion's flagged keys, highest severity first (a key's highest severity counts)."""
    best: dict[str, dict[Hashable, float]] = {}
    for c in candidates:
        if not math.isfinite(c.severity):
            raise ValueError(f"severity must be finite, got {c.severity!r} for {c.key!r} ({c.assertion})")
        if c.severity <= 0:
            continue
        arm = best.setdefault(c.assertion, {})
        arm[c.key] = max(c.severity, arm.get(c.key, 0.0))
    return {a: sorted(rows, key=rows.__getitem__, reverse=True) for a, rows in best.items()}


def _arm_values(history: Mapping[str, Sequence[tuple[int, int]]]) -> dict[str, float | None]:
    return {arm: arm_value(rounds) for arm, rounds in history.items()}


def _choose_bal(
    arms: dict[str, list[Hashable]],
    n: int,
    values: Mapping[str, float | None],
    rng: np.random.Generator,
) -> list[Hashable]:
    chosen: list[Hashable] = []
    taken: set[Hashable] = set()
    cursor = dict.fromkeys(arms, 0)  # next unread position in each arm's severity order
    picks = dict.fromkeys(arms, 0)  # greedy picks this round, to share ties evenly
    while len(chosen) < n:
        live = [a for a in sorted(arms) if _advance(arms[a], cursor, a, taken)]
        if not live:
            break
        if rng.random() < EPSILON:
            arm = live[rng.integers(len(live))]
        else:
            arm = _greedy_arm(live, values, picks)
            picks[arm] += 1
        key = arms[arm][cursor[arm]]
        chosen.append(key)
        taken.add(key)
    return chosen


def _advance(rows: list[Hashable], cursor: dict[str, int], arm: str, taken: set[Hashable]) -> bool:
    """Move the arm's cursor past rows already taken (through another arm); True if rows remain."""
    while cursor[arm] < len(rows) and rows[cursor[arm]] in taken:
        cursor[arm] += 1
    return cursor[arm] < len(rows)


def _greedy_arm(live: list[str], values: Mapping[str, float | None], picks: dict[str, int]) -> str:
    """The arm of highest value; untried arms count as best (optimism), and when no arm has reduced
    its flags (every value <= 0) all arms tie, as in BAL's uniform fallback."""
    scores = {a: math.inf if values.get(a) is None else values[a] for a in live}
    top = max(scores.values())
    tied = live if top <= 0 else [a for a in live if scores[a] == top]
    return min(tied, key=lambda a: picks[a])


def _choose_uncertain(
    n: int,
    confidence: Mapping[Hashable, float] | None,
    all_keys: Sequence[Hashable] | None,
    rng: np.random.Generator,
) -> list[Hashable]:
    if confidence is None:
        raise ValueError("strategy 'uncertainty' needs a model confidence per key (confidence=...)")
    pool = _distinct(all_keys) if all_keys is not None else _distinct(confidence)
    missing = [k for k in pool if k not in confidence]
    if missing:
        raise ValueError(
            f"strategy 'uncertainty': {len(missing)} keys have no confidence, e.g. {missing[0]!r}"
        )
    conf = np.array([confidence[k] for k in pool], dtype=float)
    if conf.size and not (np.all(np.isfinite(conf)) and conf.min() >= 0.0 and conf.max() <= 1.0):
        raise ValueError("strategy 'uncertainty': confidences must lie in [0, 1]")
    # A random permutation first, so equal confidences are broken at random by the stable sort.
    shuffle = rng.permutation(len(pool))
    order = shuffle[np.argsort(conf[shuffle], kind="stable")]
    return [pool[i] for i in order[:n]]
