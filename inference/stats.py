"""Per-model execution statistics; the planner turns ``ms_per_row`` into a cost per row."""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("sievedb.inference.stats")

# Called with (model_key, rows, device, run_s, wall_s) after every batch any recorder records
# (the server's Prometheus histograms). Process-wide, as logging handlers are: a pool, local or
# Ray, records through StatsRecorder and needs no wiring of its own.
BatchListener = Callable[[str, int, str, float, float], None]
_listeners: list[BatchListener] = []


def add_batch_listener(listener: BatchListener) -> None:
    _listeners.append(listener)


def remove_batch_listener(listener: BatchListener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


@dataclass(frozen=True)
class ModelStats:
    """A snapshot of one model's executions in a pool.

    ``recent_batch_sizes`` holds the rows of the last ``window`` executed batches (oldest first);
    the counters cover the pool's whole life. ``inference_seconds`` is time inside
    ``InferenceSession.run`` as measured in the workers; ``preprocess_seconds`` is decoding in the
    workers; ``wall_seconds`` is dispatch-to-result as seen by the pool (includes transfer).
    """

    model_key: str
    requests: int = 0
    batches: int = 0
    rows: int = 0
    errors: int = 0
    crashes: int = 0
    inference_seconds: float = 0.0
    preprocess_seconds: float = 0.0
    wall_seconds: float = 0.0
    max_batch_rows: int = 0
    recent_batch_sizes: tuple[int, ...] = ()
    seconds_by_device: dict[str, float] = field(default_factory=dict)
    rows_by_device: dict[str, int] = field(default_factory=dict)

    @property
    def ms_per_row(self) -> dict[str, float]:
        """Measured model time per input row, per device ("cpu", "cuda:0", ...)."""
        return {
            dev: 1000.0 * secs / self.rows_by_device[dev]
            for dev, secs in self.seconds_by_device.items()
            if self.rows_by_device.get(dev)
        }

    @property
    def mean_batch_rows(self) -> float:
        return self.rows / self.batches if self.batches else 0.0


class StatsRecorder:
    """Mutable counters behind ``ModelStats`` (touched only from the event loop thread)."""

    def __init__(self, model_key: str, window: int) -> None:
        self.model_key = model_key
        self.requests = 0
        self.batches = 0
        self.rows = 0
        self.errors = 0
        self.crashes = 0
        self.inference_seconds = 0.0
        self.preprocess_seconds = 0.0
        self.wall_seconds = 0.0
        self.max_batch_rows = 0
        self.recent: deque[int] = deque(maxlen=window)
        self.seconds_by_device: dict[str, float] = defaultdict(float)
        self.rows_by_device: dict[str, int] = defaultdict(int)

    def record_batch(
        self, rows: int, requests: int, device: str, run_s: float, pre_s: float, wall_s: float
    ) -> None:
        self.requests += requests
        self.batches += 1
        self.rows += rows
        self.inference_seconds += run_s
        self.preprocess_seconds += pre_s
        self.wall_seconds += wall_s
        self.max_batch_rows = max(self.max_batch_rows, rows)
        self.recent.append(rows)
        self.seconds_by_device[device] += run_s
        self.rows_by_device[device] += rows
        for listener in _listeners:
            try:
                listener(self.model_key, rows, device, run_s, wall_s)
            except Exception:  # an observer's bug must not fail the batch it watched
                log.exception("batch listener failed")

    def snapshot(self) -> ModelStats:
        return ModelStats(
            model_key=self.model_key,
            requests=self.requests,
            batches=self.batches,
            rows=self.rows,
            errors=self.errors,
            crashes=self.crashes,
            inference_seconds=self.inference_seconds,
            preprocess_seconds=self.preprocess_seconds,
            wall_seconds=self.wall_seconds,
            max_batch_rows=self.max_batch_rows,
            recent_batch_sizes=tuple(self.recent),
            seconds_by_device=dict(self.seconds_by_device),
            rows_by_device=dict(self.rows_by_device),
        )
