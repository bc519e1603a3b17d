"""Start the inference pool on first use, so servers that never run a model spawn no workers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("sievedb.planner.pool")


class LazyInferencePool:
    def __init__(self, **options: Any) -> None:
        self._options = options
        self._pool = None
        self._lock = asyncio.Lock()

    async def _started(self):
        async with self._lock:
            if self._pool is None:
                from inference.pool import InferencePool

                pool = InferencePool(**self._options)
                await pool.start()
                self._pool = pool
        return self._pool

    async def infer(self, model, inputs):
        pool = self._pool or await self._started()
        return await pool.infer(model, inputs)

    @property
    def pool(self):
        """The running pool, or None before the first model call."""
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close(drain=False, timeout=10)
            self._pool = None
