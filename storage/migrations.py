"""Versioned migrations of the ``sieve`` schema in the backing Postgres.

Each ``migrations/NNNN_name.sql`` runs once, in its own transaction, under an advisory lock so
that two SieveDB servers sharing one Postgres never apply the same step twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger("sievedb.storage.migrations")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
LOCK_KEY = 0x5133_7EDB  # arbitrary, constant: the advisory lock that serialises migrations
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} does not match NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}")
    return found


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> int:
    """Bring the ``sieve`` schema up to date; return the schema version now in force."""
    migrations = available_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS sieve;"
            "CREATE TABLE IF NOT EXISTS sieve.schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM sieve.schema_version")}
        for step in migrations:
            if step.version in done:
                continue
            log.info("applying migration version=%d name=%s", step.version, step.name)
            async with conn.transaction():
                await conn.execute(step.sql)
                await conn.execute(
                    "INSERT INTO sieve.schema_version (version, name) VALUES ($1, $2)",
                    step.version,
                    step.name,
                )
        current = await conn.fetchval("SELECT max(version) FROM sieve.schema_version")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return int(current or 0)
