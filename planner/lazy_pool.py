"""Start the inference pool on first use, so servers that never run a model spawn no workers.

With a Ray address the pool is ``inference.ray_pool.RayInferencePool`` (model replicas as Ray
actors), else the local ``inference.pool.InferencePool``; both have the same interface. Ray is
imported only in the first case, and only when the first model runs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from typing import Any

log = logging.getLogger("sievedb.planner.pool")


class BackendUnavailable(Exception):
    """The chosen inference backend cannot run here (Ray asked for but not installed)."""


class LazyInferencePool:
    def __init__(
        self,
        *,
        ray_address: str | None = None,
        ray_max_replicas: int | None = None,
        **options: Any,
    ) -> None:
        """``options`` go to the local pool; ``ray_address`` picks the Ray pool instead."""
        if ray_address and not _ray_installed():
            raise BackendUnavailable(
                f"--ray-address {ray_address} needs Ray, which is not installed: pip install 'sievedb[ray]'"
            )
        if ray_max_replicas is not None and ray_max_replicas < 1:
            raise BackendUnavailable("--ray-max-replicas must be at least 1")
        self._ray_address = ray_address
        self._ray_max_replicas = ray_max_replicas
        self._options = options
        self._pool = None
        self._lock = asyncio.Lock()

    async def _started(self):
        async with self._lock:
            if self._pool is None:
                pool = self._build()
                await pool.start()
                self._pool = pool
        return self._pool

    def _build(self):
        if self._ray_address:
            # Deferred: importing ray costs about a second and most servers never use it.
            from inference.ray_pool import RayInferencePool

            log.info("inference runs on the Ray cluster at %s", self._ray_address)
            return RayInferencePool(self._ray_address, max_replicas=self._ray_max_replicas)
        from inference.pool import InferencePool

        return InferencePool(**self._options)

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


def _ray_installed() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # ValueError: a stub in sys.modules without a spec
        return False
