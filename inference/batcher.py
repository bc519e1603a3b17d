"""Dynamic batching: coalesce concurrent requests for one model, and split the answers back.

A request waits in its model's queue. The pool takes a batch when a worker has room and either
the queued rows reach ``max_batch_rows``, or the oldest request has waited ``max_wait_ms``, or no
batch of this model is running (then nothing is about to finish and resubmit, so waiting would
only add latency to a lone caller). Requests are concatenated in arrival order; the pool has
already cut requests larger than ``max_batch_rows`` into chunks (``merge_chunks`` joins them).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.errors import InferenceError
from inference.ipc import EncodedTensor
from inference.model import ModelRef


@dataclass(eq=False)
class Request:
    model: ModelRef
    inputs: dict[str, EncodedTensor]
    rows: int
    future: asyncio.Future
    enqueued_at: float = field(default_factory=time.monotonic)
    holds_slot: bool = True  # still counted against the pool's queue limit

    @property
    def batch_key(self) -> tuple[Any, ...]:
        return tuple((name, enc.batch_key) for name, enc in self.inputs.items())


@dataclass(eq=False)
class Batch:
    model: ModelRef
    requests: list[Request]
    rows: int
    seq: int = 0
    slot: int = 0
    dispatched_at: float = 0.0

    def tensors(self) -> dict[str, list[EncodedTensor]]:
        names = self.requests[0].inputs.keys()
        return {name: [r.inputs[name] for r in self.requests] for name in names}


class ModelQueue:
    """Pending requests of one model (one ``ModelRef.ident``)."""

    def __init__(self, model: ModelRef) -> None:
        self.model = model
        self.pending: deque[Request] = deque()
        self.rows = 0
        self.running = 0  # batches of this model dispatched and not yet answered

    def push(self, request: Request) -> None:
        self.pending.append(request)
        self.rows += request.rows

    def drop_cancelled(self) -> list[Request]:
        dropped = [r for r in self.pending if r.future.done()]
        if dropped:
            self.pending = deque(r for r in self.pending if not r.future.done())
            self.rows = sum(r.rows for r in self.pending)
        return dropped

    def deadline(self, max_wait_s: float) -> float:
        return self.pending[0].enqueued_at + max_wait_s

    def ready(self, now: float, max_rows: int, max_wait_s: float) -> bool:
        if not self.pending:
            return False
        return self.running == 0 or self.rows >= max_rows or now >= self.deadline(max_wait_s)

    def take(self, max_rows: int) -> Batch:
        """The oldest request plus the following compatible ones that fit in ``max_rows``."""
        head = self.pending.popleft()
        taken, rows, key = [head], head.rows, head.batch_key
        kept: deque[Request] = deque()
        while self.pending:
            req = self.pending.popleft()
            if rows + req.rows <= max_rows and req.batch_key == key:
                taken.append(req)
                rows += req.rows
            else:
                kept.append(req)
                if rows + 1 > max_rows:
                    break  # full: leave the rest in order
        kept.extend(self.pending)
        self.pending = kept
        self.rows -= rows
        return Batch(self.model, taken, rows)


# -----------------------------------------------------------------------------------------------
# Splitting a batch's outputs back to its requests


def split_outputs(batch: Batch, outputs: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Per-request outputs, following ``ModelRef.split`` (see its docstring)."""
    mode = batch.model.split
    if mode == "auto":
        mode = "row_index" if _looks_like_row_index(outputs, batch.rows) else "rows"
    if mode == "row_index":
        return [outputs] if len(batch.requests) == 1 else _split_by_index(batch, outputs)
    _check_rows(batch, outputs)
    if len(batch.requests) == 1:
        return [outputs]
    bounds = np.cumsum([0] + [r.rows for r in batch.requests])
    return [{n: v[a:b] for n, v in outputs.items()} for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _looks_like_row_index(outputs: dict[str, np.ndarray], rows: int) -> bool:
    first = next(iter(outputs.values()), None)
    return (
        isinstance(first, np.ndarray)
        and first.dtype.kind in "iu"
        and first.ndim in (1, 2)
        and first.shape[0] != rows
    )


def _check_rows(batch: Batch, outputs: dict[str, np.ndarray]) -> None:
    for name, value in outputs.items():
        if np.ndim(value) == 0 or len(value) != batch.rows:
            raise InferenceError(
                f"model {batch.model.key!r}: output {name!r} has shape {np.shape(value)}, not one row per "
                f"input row ({batch.rows}); use split='row_index' if its first output is a row index"
            )


def _split_by_index(batch: Batch, outputs: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    names = list(outputs)
    index_col = outputs[names[0]]
    idx = (index_col if index_col.ndim == 1 else index_col[:, 0]).astype(np.int64)
    m = len(idx)
    for name in names:
        if len(outputs[name]) != m:
            raise InferenceError(
                f"model {batch.model.key!r}: output {name!r} has {len(outputs[name])} rows but the row index "
                f"output {names[0]!r} has {m}"
            )
    if m and (idx.min() < 0 or idx.max() >= batch.rows):
        raise InferenceError(f"model {batch.model.key!r}: row index out of range for {batch.rows} rows")
    bounds = np.cumsum([0] + [r.rows for r in batch.requests])
    owner = np.searchsorted(bounds, idx, side="right") - 1
    order = np.argsort(owner, kind="stable")
    cuts = np.searchsorted(owner[order], np.arange(len(batch.requests) + 1))
    result = []
    for i in range(len(batch.requests)):
        sel = order[cuts[i] : cuts[i + 1]]
        part = {n: outputs[n][sel] for n in names}
        # Renumber the index to the caller's own rows.
        part[names[0]] = part[names[0]] - np.asarray(bounds[i], dtype=part[names[0]].dtype) * _index_mask(
            part[names[0]]
        )
        result.append(part)
    return result


def _index_mask(col: np.ndarray) -> np.ndarray:
    """1 where the row index lives (the whole of a 1-D column, column 0 of a 2-D one), else 0."""
    if col.ndim == 1:
        return np.ones(1, dtype=col.dtype)
    mask = np.zeros(col.shape[1], dtype=col.dtype)
    mask[0] = 1
    return mask


def merge_chunks(
    model: ModelRef, parts: list[dict[str, np.ndarray]], starts: list[int], rows: int
) -> dict[str, np.ndarray]:
    """Put back together the answers of a request of ``rows`` rows cut into chunks at ``starts``."""
    names = list(parts[0])
    ends = [*starts[1:], rows]
    row_index = model.split == "row_index" or (
        model.split == "auto"
        and any(_looks_like_row_index(p, e - s) for p, s, e in zip(parts, starts, ends, strict=True))
    )
    merged = {}
    for j, name in enumerate(names):
        values = [p[name] for p in parts]
        if row_index and j == 0:
            # Chunk answers number rows from 0; shift them to the request's rows.
            values = [
                v + np.asarray(s, dtype=v.dtype) * _index_mask(v) for v, s in zip(values, starts, strict=True)
            ]
        merged[name] = np.concatenate(values)
    return merged


async def infer_in_chunks(
    model: ModelRef,
    inputs: dict[str, Any],
    max_rows: int,
    infer_one: Callable[[ModelRef, dict[str, np.ndarray], int], Awaitable[dict[str, np.ndarray]]],
) -> dict[str, np.ndarray]:
    """A request as the pools take it: arrays checked for one row count, and cut into chunks of
    ``max_rows`` that run like separate requests (on several workers or replicas when free) and
    are put back together."""
    arrays = {name: as_array(v) for name, v in inputs.items()}
    rows = row_count(model, arrays)
    if rows <= max_rows:
        return await infer_one(model, arrays, rows)
    starts = list(range(0, rows, max_rows))
    parts = await asyncio.gather(
        *(
            infer_one(model, {n: a[s : s + max_rows] for n, a in arrays.items()}, min(max_rows, rows - s))
            for s in starts
        )
    )
    return merge_chunks(model, parts, starts, rows)


def as_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind in "SU":
        # NumPy's fixed-width bytes/str types drop trailing NULs: keep the objects themselves.
        obj = np.empty(arr.shape, dtype=object)
        obj[...] = value
        return obj
    return arr


def row_count(model: ModelRef, arrays: dict[str, np.ndarray]) -> int:
    if not arrays:
        raise ValueError(f"model {model.key!r}: no inputs given")
    if any(a.ndim == 0 for a in arrays.values()):
        raise ValueError(f"model {model.key!r}: inputs need a leading row dimension")
    rows = {len(a) for a in arrays.values()}
    if len(rows) != 1:
        sizes = {name: len(a) for name, a in arrays.items()}
        raise ValueError(f"model {model.key!r}: inputs disagree on the number of rows: {sizes}")
    return rows.pop()
