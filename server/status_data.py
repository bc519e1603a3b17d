"""What the status page shows a role, as plain JSON-able data (rendered by server/http/).

Everything read from Postgres is read *as the role*: one read-only transaction on SieveDB's
connection to the database with ``SET LOCAL SESSION AUTHORIZATION`` (the query log's policy
compares ``session_user``, so ``SET ROLE`` alone would show SieveDB's own rows), so row-level
security and privileges decide, as they do for the role's own session. Running statements come
from the server's activity list: a superuser sees every one, other roles their own.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg

from planner.install import quote_ident, signature_sql

log = logging.getLogger("sievedb.server.status")

RECENT = 25  # query_log rows shown

IS_SUPERUSER = "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1"
RECENT_QUERIES = f"""
SELECT query_id, started_at, role, query, mode, target, confidence, estimate, ci_low, ci_high,
       target_met, certified, certified_level, rows_labelled, model_calls, cache_hits, elapsed_ms,
       trace
FROM sieve.query_log ORDER BY query_id DESC LIMIT {RECENT}
"""
# $1: the models' function signatures, in the order of $2 (their names)
MODELS = """
SELECT m.name, m.version, m.path, m.cost_ms_per_row, m.stats,
       pg_catalog.pg_total_relation_size(c.oid) AS cache_bytes,
       greatest(c.reltuples, 0)::bigint AS cache_rows
FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[])) AS f(signature, name)
JOIN sieve.models m ON m.name = f.name
LEFT JOIN pg_catalog.pg_class c
       ON c.oid = pg_catalog.to_regclass(format('sieve_cache.m%s_v%s', m.id, m.version))
WHERE pg_catalog.to_regprocedure(f.signature) IS NOT NULL
  AND pg_catalog.has_function_privilege(f.signature, 'EXECUTE')
ORDER BY m.name
"""
ASSERTIONS = """
SELECT a.name, a.kind, a.owner, a.models, a.last_checked, a.last_count,
       (SELECT count(*) FROM sieve.violations v WHERE v.assertion = a.name) AS violations
FROM sieve.assertions a
WHERE pg_catalog.pg_has_role(a.owner, 'MEMBER')
ORDER BY a.name
"""
PENDING_LABELS = """
SELECT function, count(*) AS pending, min(requested_at) AS oldest
FROM sieve.label_requests GROUP BY function ORDER BY function
"""


async def is_superuser(pool: asyncpg.Pool, role: str) -> bool:
    async with pool.acquire() as conn:
        return bool(await conn.fetchval(IS_SUPERUSER, role))


async def status_for(server: Any, role: str, database: str) -> dict:
    """Running statements, recent queries (with traces), models, assertions and pending labels
    that ``role`` may see on ``database``."""
    planner = await server.planners.get(database)
    pool = planner.db
    superuser = await is_superuser(pool, role)
    running = [s.as_dict() for s in server.activity.running(None if superuser else role)]
    specs = sorted(planner.catalog.models.values(), key=lambda s: s.name)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await _become(conn, role)
        recent = [_recent_row(r) for r in await conn.fetch(RECENT_QUERIES)]
        models = await conn.fetch(MODELS, [signature_sql(s, False) for s in specs], [s.name for s in specs])
        assertions = await conn.fetch(ASSERTIONS)
        labels = await _optional(conn, PENDING_LABELS, "sieve.label_requests")
    return {
        "role": role,
        "database": database,
        "superuser": superuser,
        "running": running,
        "recent": recent,
        "traces": [
            {"query_id": r["query_id"], "mode": r["mode"], "trace": r["trace"]} for r in recent if r["trace"]
        ],
        "models": [_model_row(r) for r in models],
        "assertions": [_plain(dict(r)) for r in assertions],
        "labels": [_plain(dict(r)) for r in labels],
    }


class StatusRefused(Exception):
    """The status cannot be read as this role (no such role, or SieveDB may not act as it)."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


async def _become(conn: asyncpg.Connection, role: str) -> None:
    try:
        await conn.execute(f"SET LOCAL SESSION AUTHORIZATION {quote_ident(role)}")
    except asyncpg.PostgresError as exc:
        raise StatusRefused(
            exc.sqlstate,
            f'cannot read the status as role "{role}": {exc} '
            "(SieveDB reads it as that role: its backing role must be a superuser)",
        ) from None


async def _optional(conn: asyncpg.Connection, sql: str, relation: str) -> list:
    """Rows of ``sql`` over a relation another part of SieveDB may not have made yet (or the role
    may not read): none then, and the transaction carries on."""
    if await conn.fetchval("SELECT pg_catalog.to_regclass($1)", relation) is None:
        return []
    try:
        async with conn.transaction():  # a savepoint
            return await conn.fetch(sql)
    except asyncpg.PostgresError as exc:
        log.info("status: %s not shown: %s", relation, exc)
        return []


def _recent_row(record: asyncpg.Record) -> dict:
    row = _plain(dict(record))
    for name in ("model_calls", "trace"):
        if isinstance(row.get(name), str):
            row[name] = json.loads(row[name])
    return row


def _model_row(record: asyncpg.Record) -> dict:
    """Device and ms/row measured (sieve.models, kept across restarts), batch sizes seen."""
    cost = _json(record["cost_ms_per_row"]) or {}
    stats = _json(record["stats"]) or {}
    return {
        "name": record["name"],
        "version": record["version"],
        "file": record["path"],
        "device": ", ".join(sorted(cost)) or None,
        "ms_per_row": {device: round(ms, 4) for device, ms in cost.items()},
        "batch_sizes": {
            "mean": stats.get("mean_batch_rows"),
            "max": stats.get("max_batch_rows"),
            "recent": stats.get("recent_batch_sizes", [])[-16:],
        },
        "rows_run": stats.get("rows"),
        "cache_rows": record["cache_rows"],
        "cache_bytes": record["cache_bytes"],
    }


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _plain(row: dict) -> dict:
    """JSON-able values: timestamps as ISO text, arrays as lists."""
    for key, value in row.items():
        if hasattr(value, "isoformat"):
            row[key] = value.isoformat()
        elif isinstance(value, tuple):
            row[key] = list(value)
    return row
