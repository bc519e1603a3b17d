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

from planner.classify import Classifier
from planner.materialize import Databases
from planner.planner import Planner

log = logging.getLogger("sievedb.planner.planners")

OpenDatabase = Callable[[str], Awaitable[Databases]]


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
        **planner_options,
    ) -> None:
        self._open = open_database
        self._inference = inference_pool
        self.classifier = classifier
        self._models_dir = models_dir
        self._options = planner_options
        self._planners: dict[str, Planner] = {}
        self._starting: dict[str, asyncio.Future] = {}
        self.names: dict[str, tuple[set[str], set[str]]] = {}

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
        await planner.start()
        self._planners[database] = planner
        log.info("planner ready database=%s models=%d", database, len(planner.catalog.names))
        return planner

    def publish(self) -> None:
        models = set().union(*(n for n, _ in self.names.values()))
        views = set().union(*(v for _, v in self.names.values()))
        self.classifier.set_models(models, views)
