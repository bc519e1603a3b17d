"""The pool's side of one worker process: its pipes, its shared-memory slots, its in-flight batches.

Everything here runs on the event loop thread. Pipe reads are driven by ``loop.add_reader`` (the
worker writes a whole small header at once, so a readable pipe never blocks us for long), and the
process sentinel tells us when the worker dies, however it died.

Each worker has ``depth`` slots; a slot is a pair of parent-owned segments (inputs, outputs) and
holds one batch, so the worker can start the next batch while we read the previous answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inference import ipc
from inference.batcher import Batch
from inference.errors import InferenceError
from inference.worker import worker_main

log = logging.getLogger("sievedb.inference.pool")

_MIN_SEGMENT = 1 << 20
_PAGE = 1 << 16


@dataclass
class Slot:
    index: int
    inp: ipc.Segment | None = None
    out: ipc.Segment | None = None


@dataclass(frozen=True)
class WorkerInfo:
    """What ``InferencePool.workers()`` reports about one worker."""

    worker_id: int
    pid: int | None
    state: str
    device: str
    in_flight: int
    restarts: int


OnResult = Callable[["WorkerHandle", Batch, dict[str, Any], dict[str, Any] | None], None]
OnExit = Callable[["WorkerHandle", list[Batch], str], None]


class WorkerHandle:
    def __init__(
        self,
        worker_id: int,
        ctx: Any,
        config: dict[str, Any],
        depth: int,
        on_result: OnResult,
        on_exit: OnExit,
    ) -> None:
        self.worker_id = worker_id
        self.ctx = ctx
        self.config = config
        self.on_result = on_result
        self.on_exit = on_exit
        self.slots = [Slot(i) for i in range(depth)]
        self.free_slots: list[int] = []
        self.in_flight: dict[int, Batch] = {}
        self.loaded: set[str] = set()
        self.models_sent: set[str] = set()
        self.state = "new"
        self.device = "?"
        self.restarts = -1
        self.crash_streak = 0
        self.process: Any = None
        self._requests: Any = None
        self._responses: Any = None
        self._ready: asyncio.Future | None = None  # created per start, on the running loop
        self._exited: asyncio.Future | None = None
        self._seq = itertools.count(1)
        self._token = f"svdb{os.getpid()}_{uuid.uuid4().hex[:8]}_w{worker_id}"
        self._segment_ids = itertools.count()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            self.worker_id, self.pid, self.state, self.device, len(self.in_flight), max(0, self.restarts)
        )

    def can_take(self) -> bool:
        return self.state == "ready" and bool(self.free_slots)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, timeout: float) -> dict[str, Any]:
        """Spawn the process and wait for its ``ready`` message."""
        loop = asyncio.get_running_loop()
        self.restarts += 1
        self.state = "starting"
        self.loaded.clear()
        self.models_sent.clear()
        self._exited = None
        req_r, req_w = self.ctx.Pipe(duplex=False)
        resp_r, resp_w = self.ctx.Pipe(duplex=False)
        name = f"sievedb-infer-{self.worker_id}"
        self.process = self.ctx.Process(
            target=worker_main, args=(self.worker_id, self.config, req_r, resp_w), name=name, daemon=True
        )
        # Spawning execs a new interpreter; do it off the loop thread.
        await loop.run_in_executor(None, self.process.start)
        # Close our copies of the child's ends, or we would never see EOF when it dies.
        req_r.close()
        resp_w.close()
        self._requests, self._responses = req_w, resp_r
        self._ready = loop.create_future()
        self._exited = loop.create_future()
        loop.add_reader(resp_r.fileno(), self._on_readable)
        loop.add_reader(self.process.sentinel, self._on_sentinel)
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except BaseException:
            self._ready.cancel()  # nobody will read how it ended; the sentinel still cleans up
            self.kill()
            raise
        self.device = ready["device"]
        self.free_slots = [s.index for s in reversed(self.slots)]
        self.state = "ready"
        return ready

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()

    async def stop(self, timeout: float) -> None:
        """Ask the worker to exit, kill it after ``timeout``, release pipes and segments."""
        if self.process is not None and self._exited is None:
            self.kill()  # cancelled while spawning: no pipes to talk through
        elif self.process is not None and self.state not in ("dead", "stopped"):
            self.state = "stopping"
            with contextlib.suppress(OSError, ValueError, AttributeError):  # already gone
                self._requests.send_bytes(ipc.dumps({"type": "stop"}))
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), timeout)
            except TimeoutError:
                log.warning("inference worker %d did not stop in %.0f s; killing it", self.worker_id, timeout)
                self.kill()
                await asyncio.wait_for(asyncio.shield(self._exited), 10.0)
        self.state = "stopped"
        for slot in self.slots:
            for seg in (slot.inp, slot.out):
                if seg is not None:
                    seg.close()
            slot.inp = slot.out = None

    def _detach(self) -> None:
        loop = asyncio.get_running_loop()
        if self._responses is not None:
            loop.remove_reader(self._responses.fileno())
            self._responses.close()
        if self._requests is not None:
            self._requests.close()
        loop.remove_reader(self.process.sentinel)
        self._requests = self._responses = None

    # -- submitting -----------------------------------------------------------------------------

    def submit(self, batch: Batch, out_hint: int) -> None:
        """Write the batch into a free slot and tell the worker. Raises InferenceError (no shm)."""
        slot = self.slots[self.free_slots.pop()]
        try:
            plan, total = ipc.plan_layout(batch.tensors())
            slot.inp = self._ensure(slot.inp, total)
            slot.out = self._ensure(slot.out, out_hint)
            headers = ipc.write_layout(slot.inp.buf, plan)
        except MemoryError as exc:
            self.free_slots.append(slot.index)
            raise InferenceError(f"model {batch.model.key!r}: {exc} (is /dev/shm too small?)") from exc
        batch.seq, batch.slot = next(self._seq), slot.index
        self.in_flight[batch.seq] = batch
        msg = {"type": "run", "seq": batch.seq, "slot": slot.index, "in": slot.inp.name, "out": slot.out.name}
        msg.update(ident=batch.model.ident, inputs=headers)
        if batch.model.ident not in self.models_sent:
            # The worker remembers a model's description by ident: send it once per process.
            msg["model"] = batch.model.wire
            self.models_sent.add(batch.model.ident)
        # If the worker is dead the send fails; its sentinel then fails this batch with the others.
        with contextlib.suppress(OSError):
            self._requests.send_bytes(ipc.dumps(msg))

    def _ensure(self, seg: ipc.Segment | None, need: int) -> ipc.Segment:
        if seg is not None and seg.size >= need:
            return seg
        # Grow geometrically so a slowly growing batch does not reallocate every time.
        size = max(_MIN_SEGMENT, need + need // 4, 2 * seg.size if seg is not None else 0)
        size = (size + _PAGE - 1) // _PAGE * _PAGE
        new = ipc.Segment(f"{self._token}_{next(self._segment_ids)}", size, create=True)
        if seg is not None:
            seg.close()  # the worker still maps it until it sees the new name; unlinking is safe
        return new

    # -- receiving ------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            msg = ipc.loads(self._responses.recv_bytes())
        except (EOFError, OSError):
            # The worker is gone; stop polling the pipe and let the sentinel report how.
            asyncio.get_running_loop().remove_reader(self._responses.fileno())
            return
        kind = msg["type"]
        if kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(msg)
            return
        batch = self.in_flight.pop(msg["seq"])
        outputs = None
        if kind == "result":
            outputs = self._read_outputs(msg, self.slots[batch.slot])
        self.free_slots.append(batch.slot)
        self.on_result(self, batch, msg, outputs)

    def _read_outputs(self, msg: dict[str, Any], slot: Slot) -> dict[str, Any]:
        if msg["inline"]:
            payload = self._responses.recv_bytes()
            return ipc.read_tensors(payload, msg["outputs"], copy=True)
        assert slot.out is not None
        # Copy out: the slot is reused by the next batch while callers keep their arrays.
        return ipc.read_tensors(slot.out.buf, msg["outputs"], copy=True)

    def _on_sentinel(self) -> None:
        # The sentinel closes a moment before the exit status exists; this wait is that moment.
        self.process.join(0.5)
        was = self.state
        self._detach()
        self.state = "dead"
        description = self.exit_description()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(
                RuntimeError(f"inference worker {self.worker_id} {description} at startup")
            )
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(description)
        batches = list(self.in_flight.values())
        self.in_flight.clear()
        self.free_slots = []
        if was == "ready":
            self.on_exit(self, batches, description)

    def exit_description(self) -> str:
        code = self.process.exitcode if self.process is not None else None
        if code is None:
            return "stopped responding"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"
