"""What both inference pools (local worker processes, Ray replicas) do with a request before a
worker or replica takes it: admission under ``queue_limit``, one queue per model where requests
of concurrent queries meet to share a batch, the per-model statistics, and failing what is left
when the pool closes. A pool says where a model's queue lives and how batches leave it
(``_queue_of``, ``_schedule``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from inference.batcher import Batch, ModelQueue, Request, infer_in_chunks
from inference.errors import PoolClosedError
from inference.ipc import encode_tensor
from inference.model import ModelRef
from inference.stats import ModelStats, StatsRecorder

log = logging.getLogger("sievedb.inference.pool")

DEVICES = ("auto", "cuda", "cpu")


class RequestFront:
    """The request side shared by the pools; see the module docstring."""

    def __init__(
        self,
        *,
        max_batch_rows: int,
        max_wait_ms: float,
        queue_limit: int,
        pipeline_depth: int,
        device: str,
        stats_window: int,
    ) -> None:
        if device not in DEVICES:
            raise ValueError(f"device must be auto, cuda or cpu, not {device!r}")
        if max_batch_rows < 1 or queue_limit < 1 or pipeline_depth < 1:
            raise ValueError("max_batch_rows, queue_limit and pipeline_depth must be at least 1")
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_limit = queue_limit
        self.pipeline_depth = pipeline_depth
        self.device = device
        self.stats_window = stats_window
        self._stats: dict[str, StatsRecorder] = {}
        self._slots: asyncio.Semaphore | None = None
        self._queued = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._schedule_pending = False
        self._idle: asyncio.Event | None = None
        self._state = "new"

    def _open(self) -> None:
        """The loop-bound parts, made when the pool starts."""
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self.queue_limit)
        self._idle = asyncio.Event()
        self._idle.set()

    async def close(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        raise NotImplementedError

    async def _closing(self, drain: bool, timeout: float) -> bool:
        """The start of ``close``: False when there is nothing to close; else requests are
        refused from now on and, with ``drain``, those accepted may finish (``timeout``)."""
        if self._state in ("closed", "new"):
            self._state = "closed"
            return False
        self._state = "closing"
        if drain and self._idle is not None:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                log.warning(
                    "%s: requests still running after %.0f s; failing them", type(self).__name__, timeout
                )
        return True

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        raise NotImplementedError

    # -- the public call ------------------------------------------------------------------------

    async def infer(self, model: ModelRef, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Run ``model`` on ``inputs`` (name -> array, rows first); returns name -> array.

        Awaits while ``queue_limit`` requests are already waiting. A request larger than
        ``max_batch_rows`` is cut into chunks that run like separate requests (on several workers
        or replicas when they are free) and are put back together. Raises InferenceError (the
        model rejected the batch), ModelLoadError / ModelNotFoundError, WorkerCrashedError (the
        worker or replicas died holding the request) or PoolClosedError.
        """
        if self._state != "running":
            raise PoolClosedError("inference pool is not running")
        return await infer_in_chunks(model, inputs, self.max_batch_rows, self._infer_one)

    async def _infer_one(
        self, model: ModelRef, arrays: dict[str, np.ndarray], rows: int
    ) -> dict[str, np.ndarray]:
        encoded = {name: encode_tensor(a) for name, a in arrays.items()}
        assert self._slots is not None and self._loop is not None and self._idle is not None
        await self._slots.acquire()
        if self._state != "running":
            self._slots.release()
            raise PoolClosedError("inference pool is closed")
        request = Request(model, encoded, rows, self._loop.create_future())
        self._queue_of(model).push(request)
        self._queued += 1
        self._idle.clear()
        self._schedule_soon()
        try:
            return await request.future
        finally:
            self._release(request)  # cancelled while queued: give back its place in the queue

    @property
    def queued_requests(self) -> int:
        """Requests accepted but not yet dispatched (at most ``queue_limit``)."""
        return self._queued

    def stats(self, model_key: str) -> ModelStats:
        """Execution statistics of one model (by ``ModelRef.key``)."""
        recorder = self._stats.get(model_key)
        return recorder.snapshot() if recorder is not None else ModelStats(model_key=model_key)

    # -- for the pools --------------------------------------------------------------------------

    def _queue_of(self, model: ModelRef) -> ModelQueue:
        raise NotImplementedError

    def _schedule(self) -> None:
        raise NotImplementedError

    def _schedule_soon(self) -> None:
        # Deferred to the next loop iteration so that callers submitting in the same tick share
        # a batch; repeated calls collapse into one.
        if not self._schedule_pending and self._loop is not None and self._state != "closed":
            self._schedule_pending = True
            self._loop.call_soon(self._schedule)

    def _release(self, request: Request) -> None:
        if request.holds_slot:
            request.holds_slot = False
            self._queued -= 1
            assert self._slots is not None
            self._slots.release()

    def _fail(self, batch: Batch, exc: Exception) -> None:
        for request in batch.requests:
            self._release(request)
            if not request.future.done():
                request.future.set_exception(exc)

    def _recorder(self, key: str) -> StatsRecorder:
        recorder = self._stats.get(key)
        if recorder is None:
            recorder = self._stats[key] = StatsRecorder(key, self.stats_window)
        return recorder
