"""Prometheus metrics of one server, on a registry of its own (``Metrics.registry``).

Counters that mirror ``sieve.query_log`` (planned queries, model calls, cache hits) move where
each log row is written (the planner's observer, ``planner.observe``), so they equal sums over
the log of this server's run. Inference latency and batch sizes come from the inference
statistics recorder (``inference.stats``). Values cheap to read at scrape time (connections,
statements, labels pending) are collected then, not kept twice; labels pending is a short-lived
cached read of ``sieve.label_requests`` (absent: 0), refreshed by ``scrape``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inference import stats
from server import messages

log = logging.getLogger("sievedb.server.metrics")

LABELS_TTL_S = 5.0  # a scrape reads sieve.label_requests at most this often
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = tuple(float(2**i) for i in range(14))  # 1 ... 8192 rows
PENDING_LABELS = """
SELECT l.function::text, count(*) FROM sieve.label_requests l GROUP BY 1
"""


class Metrics:
    """One server's metrics. ``statements`` and ``error`` are cheap enough for the forwarding path."""

    def __init__(
        self,
        connections: Callable[[], int] = lambda: 0,
        pool: Callable[[], asyncpg.Pool | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.statements: Tally[str] = Tally()  # kind -> statements received
        self.model_calls = Counter(
            "sievedb_model_calls",
            "Inputs run by each model (cache hits excluded), as summed in sieve.query_log.model_calls",
            ["model"],
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "sievedb_cache_hits",
            "Model inputs answered from the cache (sieve.query_log.cache_hits)",
            registry=self.registry,
        )
        self.planned = Counter(
            "sievedb_planned_queries",
            "Planned queries by mode: one per sieve.query_log row this server wrote",
            ["mode"],
            registry=self.registry,
        )
        self.errors = Counter(
            "sievedb_errors",
            "ErrorResponses sent to clients, by SQLSTATE",
            ["sqlstate"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sievedb_inference_seconds",
            "Inference batch latency, dispatch to result (seconds)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "sievedb_inference_batch_rows",
            "Rows per inference batch",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self._scraped = _ScrapeTime(connections, self.statements, pool)
        self.registry.register(self._scraped)

    # -- what the server and the planner report --------------------------------------------------

    def error(self, sqlstate: str) -> None:
        self.errors.labels(sqlstate or "XX000").inc()

    def error_message(self, message: bytes) -> None:
        """Count a whole backend message when it is an ErrorResponse (relayed from Postgres)."""
        if message[:1] == b"E":
            self.error(messages.parse_error_fields(message[5:]).get("C", "XX000"))

    def query_logged(self, mode: str, model_calls: Mapping[str, int], cache_hits: int) -> None:
        """planner.observe.QueryObserver: a sieve.query_log row was written."""
        self.planned.labels(mode).inc()
        for model, calls in model_calls.items():
            self.model_calls.labels(model).inc(calls)
        self.cache_hits.inc(cache_hits)

    def batch_done(self, model_key: str, rows: int, device: str, run_s: float, wall_s: float) -> None:
        """inference.stats batch listener; model keys are name@version#hash: by name here."""
        model = model_key.split("@", 1)[0]
        self.latency.labels(model).observe(wall_s)
        self.batch_rows.labels(model).observe(rows)

    def listen_to_inference(self) -> None:
        stats.add_batch_listener(self.batch_done)

    def stop_listening(self) -> None:
        stats.remove_batch_listener(self.batch_done)

    # -- scraping --------------------------------------------------------------------------------

    async def scrape(self, fresh: bool = False) -> bytes:
        """The Prometheus text exposition, labels pending read afresh when older than LABELS_TTL_S
        or ``fresh`` (a bare ``generate_latest(registry)`` on the loop starts that read for the
        next scrape)."""
        await self._scraped.refresh_labels(fresh)
        return generate_latest(self.registry)


class _ScrapeTime(Collector):
    """Metrics read when scraped: open connections, statements by kind, labels pending."""

    def __init__(
        self, connections: Callable[[], int], statements: Tally[str], pool: Callable[[], asyncpg.Pool | None]
    ) -> None:
        self._connections = connections
        self._statements = statements
        self._pool = pool
        self._refreshing: asyncio.Task | None = None
        self._labels: dict[str, int] = {}
        self._labels_at = float("-inf")
        self._lock = asyncio.Lock()

    def describe(self) -> list[Metric]:
        return []  # names vary with what was seen; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        self._refresh_soon()
        yield GaugeMetricFamily(
            "sievedb_connections", "Client sessions holding a backend", value=self._connections()
        )
        statements = CounterMetricFamily(
            "sievedb_statements", "Statements received, by kind", labels=["kind"]
        )
        for kind, count in sorted(self._statements.items()):
            statements.add_metric([kind], count)
        yield statements
        pending = GaugeMetricFamily(
            "sievedb_labels_pending", "Label requests waiting for a person, by function", labels=["function"]
        )
        for function, count in sorted(self._labels.items()):
            pending.add_metric([function], count)
        yield pending

    def _refresh_soon(self) -> None:
        """Collected on the event loop with stale label counts: read them for the next scrape."""
        if time.monotonic() - self._labels_at < LABELS_TTL_S or self._pool() is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # collected from another thread: scrape() refreshes
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = loop.create_task(self.refresh_labels())

    async def refresh_labels(self, fresh: bool = False) -> None:
        pool = self._pool()
        if pool is None:
            return
        asked = time.monotonic()
        async with self._lock:  # concurrent scrapes share one read
            if self._labels_at >= asked or (not fresh and asked - self._labels_at < LABELS_TTL_S):
                return
            self._labels = await _pending_labels(pool)
            self._labels_at = time.monotonic()


async def _pending_labels(pool: asyncpg.Pool) -> dict[str, int]:
    """Pending label requests per function; {} while the view does not exist (or cannot be read)."""
    try:
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT to_regclass('sieve.label_requests')") is None:
                return {}
            return {r[0]: r[1] for r in await conn.fetch(PENDING_LABELS)}
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("could not read sieve.label_requests for metrics: %s", exc)
        return {}
