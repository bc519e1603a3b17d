"""Catalog changes made through other front-ends: LISTEN for them, reload the planner's catalog.

Every front-end over one Postgres keeps its own copy of a database's catalog (planner.catalog).
Triggers on ``sieve.models`` and ``sieve.assertions``, an event trigger on view DDL (migration
0015) and the front-end that forwarded a view's DDL NOTIFY on ``CHANNEL``; each database's
planner LISTENs on a dedicated connection and reloads. A burst of notifications (a script of
DDL) costs one reload per ``DEBOUNCE_S``. A notification sent while the connection is down is
lost, so every (re)connection reloads once, and a dead connection is found by a probe even when
no error reaches it (a silent network).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger("sievedb.planner.catalog_events")

CHANNEL = "sieve_catalog"
NOTIFY = "SELECT pg_catalog.pg_notify('sieve_catalog', $1)"
# pg_stat_activity names the listeners (an operator, or a test, can find them)
LISTENER_SETTINGS = {"application_name": "sievedb catalog listener"}
DEBOUNCE_S = 0.05  # notifications this close together cost one reload
PROBE_S = 5.0  # how often an idle listener checks its connection is alive
PROBE_TIMEOUT_S = 5.0
RETRY_MIN_S, RETRY_MAX_S = 0.1, 2.0  # reconnect backoff; also a failed reload's retry

Connect = Callable[[], Awaitable[asyncpg.Connection]]
Reload = Callable[[], Awaitable[None]]


async def notify(pool: asyncpg.Pool, what: str) -> None:
    """Tell every front-end (this one included) that ``what`` changed in this database. The
    client's DDL is done whatever happens here: a failure is logged, not the client's error."""
    try:
        await pool.execute(NOTIFY, what)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("could not tell the other front-ends that %s changed: %s", what, exc)


class CatalogEvents:
    """One database's listener. ``start()`` returns once it listens (or its first try failed:
    it keeps trying in the background)."""

    def __init__(self, connect: Connect, reload: Reload, database: str) -> None:
        self._connect = connect
        self._reload = reload
        self._database = database
        self._task: asyncio.Task | None = None
        self._reloader: asyncio.Task | None = None
        self._dirty = False
        self._closed = False
        self.listening = asyncio.Event()
        self.connections = 0  # connections made so far (tests watch reconnects)
        self.reloads = 0

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening.wait(), timeout=RETRY_MAX_S)

    async def close(self) -> None:
        self._closed = True
        for task in (self._task, self._reloader):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    # -- the connection -----------------------------------------------------------------------

    async def _run(self) -> None:
        delay = RETRY_MIN_S
        while not self._closed:
            try:
                conn = await self._connect()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("catalog listener database=%s cannot connect: %s", self._database, exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_MAX_S)
                continue
            delay = RETRY_MIN_S
            try:
                await self._listen(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("catalog listener database=%s lost its connection: %s", self._database, exc)
            except Exception:  # a listener that dies leaves this front-end's catalog stale for good
                log.exception("catalog listener database=%s failed; reconnecting", self._database)
            finally:
                self.listening.clear()
                conn.terminate()
            if not self._closed:
                await asyncio.sleep(RETRY_MIN_S)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._on_notification)
        self.connections += 1
        self.listening.set()
        self.poke()  # whatever changed while nobody listened
        log.info("catalog listener database=%s listening (connection %d)", self._database, self.connections)
        while not lost.is_set() and not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), timeout=PROBE_S)
                continue
            await conn.execute("SELECT 1", timeout=PROBE_TIMEOUT_S)
        raise ConnectionError("listener connection closed")

    def _on_notification(self, _conn, _pid: int, _channel: str, payload: str) -> None:
        log.debug("catalog notification database=%s payload=%s", self._database, payload)
        self.poke()

    # -- reloads ------------------------------------------------------------------------------

    def poke(self) -> None:
        """Reload soon: once for every notification that arrives before the reload starts."""
        self._dirty = True
        if self._reloader is None or self._reloader.done():
            self._reloader = asyncio.get_running_loop().create_task(self._reload_while_dirty())

    async def _reload_while_dirty(self) -> None:
        while self._dirty and not self._closed:
            await asyncio.sleep(DEBOUNCE_S)
            self._dirty = False
            try:
                await self._reload()
                self.reloads += 1
            except Exception:  # whatever it was, a later try may succeed; a stale catalog would stay
                log.exception("catalog reload database=%s failed, retrying", self._database)
                self._dirty = True
                await asyncio.sleep(RETRY_MAX_S)
