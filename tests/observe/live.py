"""A SieveDB server running inside the test process (its own event loop in a thread), so tests
can read what only the process holds: ``server.activity``, ``server.metrics.registry`` and
``status_for``. Clients still connect to it over TCP, as to any server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.app import ServerConfig, SieveServer
from tests.support.servers import free_port

T = TypeVar("T")


class LiveServer:
    def __init__(self, data_dir: Path, models_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sievedb-loop", daemon=True)
        self.port = free_port()
        config = ServerConfig(
            host="127.0.0.1", port=self.port, data_dir=data_dir, models_dir=models_dir, inference_workers=1
        )
        self.server: SieveServer | None = None
        self._config = config

    def start(self) -> LiveServer:
        self.thread.start()

        async def start() -> SieveServer:
            server = SieveServer(self._config)  # made on the loop: it creates asyncio objects
            await server.start()
            return server

        self.server = self.call(start(), timeout=120)
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def on_loop(self, fn: Callable[[], T], timeout: float = 10) -> T:
        """Call ``fn`` on the server's loop (the server's state is the loop's alone)."""

        async def run() -> T:
            return fn()

        return self.call(run(), timeout)

    def dsn(self, user: str = "postgres", database: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every sample of the server's registry: (name, sorted labels) -> value."""
        text = self.on_loop(lambda: generate_latest(self.server.metrics.registry)).decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def stop(self) -> None:
        if self.server is not None:
            self.call(self.server.stop(), timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def total(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and wanted <= set(lab))
