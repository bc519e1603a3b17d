"""The registered models, as the planner sees them (read from ``sieve.models``)."""

from __future__ import annotations

import logging

import asyncpg

from planner.model_spec import ModelSpec

log = logging.getLogger("sievedb.planner.catalog")


_MODEL_VIEWS = """
WITH RECURSIVE reads(view_oid) AS (
    SELECT r.ev_class FROM pg_rewrite r
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
    JOIN pg_proc p ON d.refclassid = 'pg_proc'::regclass AND d.refobjid = p.oid
    JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'public' AND p.proname = ANY($1::text[])
  UNION
    SELECT r.ev_class FROM pg_rewrite r
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
    JOIN reads ON d.refclassid = 'pg_class'::regclass AND d.refobjid = reads.view_oid
)
SELECT c.relname AS name, pg_get_viewdef(c.oid) AS definition
FROM reads JOIN pg_class c ON c.oid = reads.view_oid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'v' AND n.nspname = 'public'
"""


class ModelCatalog:
    """In-memory copy of ``sieve.models``; reloaded whenever a model DDL statement ran."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._models: dict[str, ModelSpec] = {}
        self.views: dict[str, str] = {}  # view name -> its SELECT

    @property
    def names(self) -> set[str]:
        return set(self._models)

    @property
    def models(self) -> dict[str, ModelSpec]:
        return self._models

    def get(self, name: str) -> ModelSpec | None:
        return self._models.get(name)

    async def reload(self) -> None:
        rows = await self._pool.fetch(
            "SELECT id, name, path, content_hash, version, signature, options FROM sieve.models"
        )
        models = {}
        for row in rows:
            try:
                models[row["name"]] = ModelSpec.from_row(dict(row))
            except (KeyError, TypeError, ValueError):
                log.exception("unreadable catalog row for model %s; ignoring it", row["name"])
        self._models = models
        self.views = await self._model_views(list(models)) if models else {}
        log.info("model catalog loaded models=%d views=%d", len(models), len(self.views))

    async def _model_views(self, names: list[str]) -> dict[str, str]:
        """Views in schema public that read model functions, directly or through other views.
        Their definitions name every table and function with its schema (printed under an
        empty search_path): inlined into a client's statement, they read what the view reads
        whatever the client's search_path."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_catalog.set_config('search_path', '', true)")
            rows = await conn.fetch(_MODEL_VIEWS, names)
        return {r["name"]: r["definition"] for r in rows}
