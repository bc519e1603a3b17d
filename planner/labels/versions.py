"""Relabelling makes a new version of a labels function, as CREATE OR REPLACE with a new file
makes one of an ONNX model: a new cache table holding the old one's labels with the change, the
SQL function replaced in place to read it, ``sieve.models.version`` bumped. Caches, row maps,
assertions and statements keyed by version then see a new version; the old table stays (as
old versions of any model do) until the function is dropped."""

from __future__ import annotations

import dataclasses
import logging

import asyncpg

from planner.install import grant_sql, install_sql, is_own_comment, signature_sql
from planner.lifecycle import CATALOG_LOCK
from planner.model_spec import ModelSpec
from planner.outcome import SessionPort
from planner.reconcile import COMMENT

log = logging.getLogger("sievedb.planner.labels")

_SPEC = "SELECT id, name, path, content_hash, version, signature, options FROM sieve.models WHERE id = $1"
_OWNER = (
    "SELECT pg_catalog.pg_get_userbyid(p.proowner)::text FROM pg_catalog.pg_proc p "
    "WHERE p.oid = $1::pg_catalog.regprocedure"
)


async def current_spec(conn: asyncpg.Connection | asyncpg.Pool, model_id: int) -> ModelSpec | None:
    """The function as ``sieve.models`` has it now (another front-end may have bumped it)."""
    row = await conn.fetchrow(_SPEC, model_id)
    return ModelSpec.from_row(dict(row)) if row is not None else None


async def new_version(conn: asyncpg.Connection, spec: ModelSpec) -> ModelSpec:
    """In the caller's transaction: the next version of ``spec``, its cache a copy of this one's."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", CATALOG_LOCK)
    signature = signature_sql(spec, with_names=False)
    owner = await conn.fetchval(_OWNER, signature)
    comment = await conn.fetchval(COMMENT, signature)
    bumped = dataclasses.replace(spec, version=spec.version + 1)
    await conn.execute(install_sql(bumped, spec, comment=is_own_comment(comment)))
    await conn.execute(f"INSERT INTO {bumped.cache_table} SELECT * FROM {spec.cache_table}")
    for step in grant_sql(bumped, owner):
        await conn.execute(step)
    return bumped


async def follow(planner, bumped: ModelSpec | None, port: SessionPort) -> None:
    """After a label: when it made a new version, this front-end's planner reloads (the others
    follow by NOTIFY, migration 0015) and the assertions over the function are checked again."""
    if bumped is None:
        return
    log.info("relabel made a new version function=%s version=%d", bumped.name, bumped.version)
    await planner.refresh()
    planner.assertions.monitor({bumped.name}, port)
