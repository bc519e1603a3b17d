"""One planner per database of the cluster, started on the first statement a client sends there.

Each database has its own ``sieve`` schema, models, caches and views; SieveDB's privileged
connections to it are opened (and its schema migrated) on first use. The classifier that picks
statements for planning is shared: it knows the model and view names of every database, so a
name from another database at worst costs one look by the planner, which then forwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from planner.catalog_events import CatalogEvents
from planner.classify import Classifier
from planner.materialize import Databases
from planner.planner import Planner

log = logging.getLogger("sievedb.planner.planners")

OpenDatabase = Callable[[str], Awaitable[Databases]]
ConnectDatabase = Callable[[str], Awaitable[asyncpg.Connection]]  # a connection of its own


class _SharedNames:
    """What one planner tells the shared classifier: its names, merged with the others'."""

    def __init__(self, owner: Planners, database: str) -> None:
        self._owner, self._database = owner, database

    def set_models(self, names: set[str], views: set[str] = frozenset()) -> None:
        self._owner.names[self._database] = (set(names), set(views))
        self._owner.publish()


class Planners:
    def __init__(
        self,
        open_database: OpenDatabase,
        inference_pool,
        classifier: Classifier,
        models_dir: Path,
        connect: ConnectDatabase | None = None,
        **planner_options,
    ) -> None:
        """``connect``: how a database's catalog listener gets its connection (None: no
        listener, the catalog follows only this front-end's own DDL)."""
        self._open = open_database
        self._connect = connect
        self._events: dict[str, CatalogEvents] = {}
        self._inference = inference_pool
        self.classifier = classifier
        self._models_dir = models_dir
        self._options = planner_options
        self._planners: dict[str, Planner] = {}
        self._starting: dict[str, asyncio.Future] = {}
        self.names: dict[str, tuple[set[str], set[str]]] = {}
        self.http_base_url: str | None = None  # the web face's address, for the links SQL hands out

    async def get(self, database: str) -> Planner:
        planner = self._planners.get(database)
        if planner is not None:
            return planner
        starting = self._starting.get(database)
        if starting is None:
            starting = asyncio.ensure_future(self._start(database))
            self._starting[database] = starting
        try:
            return await asyncio.shield(starting)
        finally:
            if starting.done():
                self._starting.pop(database, None)

    async def _start(self, database: str) -> Planner:
        dbs = await self._open(database)
        planner = Planner(
            dbs, self._inference, _SharedNames(self, database), self._models_dir, **self._options
        )
        planner.http_base_url = self.http_base_url
        await planner.start()
        if self._connect is not None:
            events = CatalogEvents(lambda: self._connect(database), planner.refresh, database)
            await events.start()
            self._events[database] = events
        self._planners[database] = planner
        log.info("planner ready database=%s models=%d", database, len(planner.catalog.names))
        return planner

    def events(self, database: str) -> CatalogEvents | None:
        return self._events.get(database)

    async def close(self) -> None:
        """Stop the catalog listeners."""
        for events in self._events.values():
            await events.close()
        self._events.clear()

    def set_http_base_url(self, url: str | None) -> None:
        """The web face started: every planner, running or to come, links to ``url``."""
        self.http_base_url = url
        for planner in self._planners.values():
            planner.http_base_url = url

    def publish(self) -> None:
        models = set().union(*(n for n, _ in self.names.values()))
        views = set().union(*(v for _, v in self.names.values()))
        self.classifier.set_models(models, views)
