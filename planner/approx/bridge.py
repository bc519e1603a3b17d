"""The sampling operators are synchronous numpy code: they run in a worker thread, and their
oracle hops back onto the event loop for each batch (where the Postgres I/O lives)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from planner.outcome import PlanError
from planner.sqlstate import INVALID_PARAMETER


class LoopBridge:
    """Runs one operator in a thread; ``oracle(label)`` wraps an async labeller for it."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.cancelled = False

    def oracle(self, label: Callable[[np.ndarray], Awaitable[Any]]) -> Callable[[np.ndarray], Any]:
        def call(idx: np.ndarray) -> Any:
            if self.cancelled:
                raise asyncio.CancelledError()
            return asyncio.run_coroutine_threadsafe(label(np.asarray(idx)), self.loop).result()

        return call

    async def run(self, fn: Callable, *args, **kwargs) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except asyncio.CancelledError:
            self.cancelled = True  # the thread stops at its next oracle call
            raise
        except ValueError as exc:  # the operator refused its inputs
            raise PlanError(INVALID_PARAMETER, str(exc)) from None
