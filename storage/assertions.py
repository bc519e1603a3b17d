"""Reads and writes of the assertion tables (migration 0011): ``sieve.assertions``,
``sieve.violations``, ``sieve.assertion_checks``. Runs on SieveDB's own connection: only fixed,
parameterized statements, so nothing of a client's text runs privileged here."""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg


async def get(db: asyncpg.Pool, name: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM sieve.assertions WHERE name = $1", name)


async def create(db: asyncpg.Pool, row: dict) -> None:
    await db.execute(
        "INSERT INTO sieve.assertions (name, kind, definition, query, relation, features, per, key, "
        "models, owner) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8::jsonb, $9, $10)",
        row["name"],
        row["kind"],
        row["definition"],
        row.get("query"),
        row.get("relation"),
        json.dumps(row["features"]) if row.get("features") is not None else None,
        row.get("per"),
        json.dumps(row["key"]) if row.get("key") is not None else None,
        list(row["models"]),
        row["owner"],
    )


async def any_exist(db: asyncpg.Pool) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM sieve.assertions)"))


async def drop(db: asyncpg.Pool, name: str) -> None:
    await db.execute("DELETE FROM sieve.assertions WHERE name = $1", name)


async def depending_on(db: asyncpg.Pool, models: Sequence[str]) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM sieve.assertions WHERE models && $1::text[] ORDER BY name", list(models)
    )


async def replace_violations(
    db: asyncpg.Pool, name: str, flagged: list[tuple[dict, float]], versions: dict, monitored: bool
) -> None:
    """The assertion's flagged rows now (one transaction), and a line of its check history."""
    async with db.acquire() as conn, conn.transaction():
        kept = await conn.fetch("SELECT key::text, found_at FROM sieve.violations WHERE assertion = $1", name)
        # a row flagged again keeps when it was first found (jsonb text is normalised: keys sorted)
        first_seen = {json.dumps(json.loads(k), sort_keys=True): t for k, t in kept}
        await conn.execute("DELETE FROM sieve.violations WHERE assertion = $1", name)
        if flagged:
            await conn.executemany(
                "INSERT INTO sieve.violations (assertion, key, severity, model_versions, found_at) "
                "VALUES ($1, $2::jsonb, $3, $4::jsonb, coalesce($5, now()))",
                [
                    (name, key, severity, json.dumps(versions), first_seen.get(key))
                    for key, severity in ((json.dumps(k, sort_keys=True), v) for k, v in flagged)
                ],
            )
        labels = await conn.fetchval("SELECT count(*) FROM sieve.labels")
        await conn.execute(
            "INSERT INTO sieve.assertion_checks (assertion, flagged, labels, monitored) "
            "VALUES ($1, $2, $3, $4)",
            name,
            len(flagged),
            labels,
            monitored,
        )
        await conn.execute(
            "UPDATE sieve.assertions SET last_checked = now(), last_count = $2, model_versions = $3::jsonb "
            "WHERE name = $1",
            name,
            len(flagged),
            json.dumps(versions),
        )


async def history(db: asyncpg.Pool) -> dict[str, list[tuple[int, int]]]:
    """Per assertion, its checks in order as (labels added since the previous check, flagged)."""
    rows = await db.fetch("SELECT assertion, labels, flagged FROM sieve.assertion_checks ORDER BY checked_at")
    out: dict[str, list[tuple[int, int]]] = {}
    last: dict[str, int] = {}
    for assertion, labels, flagged in rows:
        out.setdefault(assertion, []).append((int(labels) - last.get(assertion, int(labels)), int(flagged)))
        last[assertion] = int(labels)
    return out
