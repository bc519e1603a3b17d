"""The registered models, as the planner sees them (read from ``sieve.models``)."""

from __future__ import annotations

import logging

import asyncpg

from planner.model_spec import ModelSpec

log = logging.getLogger("sievedb.planner.catalog")


class ModelCatalog:
    """In-memory copy of ``sieve.models``; reloaded whenever a model DDL statement ran."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._models: dict[str, ModelSpec] = {}

    @property
    def names(self) -> set[str]:
        return set(self._models)

    def get(self, name: str) -> ModelSpec | None:
        return self._models.get(name)

    async def reload(self) -> None:
        rows = await self._pool.fetch(
            "SELECT name, path, content_hash, version, signature, options FROM sieve.models"
        )
        models = {}
        for row in rows:
            try:
                models[row["name"]] = ModelSpec.from_row(dict(row))
            except (KeyError, TypeError, ValueError):
                log.exception("unreadable catalog row for model %s; ignoring it", row["name"])
        self._models = models
        log.info("model catalog loaded models=%d", len(models))
