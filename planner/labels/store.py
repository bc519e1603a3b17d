"""Every read and write of the label tables (migration 0012) and of a labels function's cache,
on SieveDB's own connections. Fixed, parameterized statements only: what a client's statement
reaches is read in its session (planner/labels/requests.py, calls.py) before it gets here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from planner.model_spec import SCALAR_COLUMN, cache_table_name

LABEL_LOCK = 0x5133_7EE0  # advisory lock (with the model id): one label of a function at a time
NOTIFY_CHANNEL = "sieve_labels"


@dataclass(frozen=True)
class Request:
    """One row of sieve.label_queue."""

    request_id: int
    model_id: int
    digest: bytes
    input_names: list[str]
    input_types: list[str]
    input_text: list[str | None]
    input_bytes: list[bytes | None]
    table_oid: int | None
    table_name: str | None
    key: str | None
    requested_by: str
    requested_at: datetime
    state: str
    answered_by: str | None


@dataclass(frozen=True)
class NewRequest:
    """What a statement asks people to label: one input, and the row it came from when known."""

    digest: bytes
    names: list[str]
    types: list[str]
    texts: list[str | None]
    blobs: list[bytes | None]
    table_oid: int | None = None
    table_name: str | None = None
    key: str | None = None


_REQUEST_COLUMNS = (
    "request_id, model_id, digest, input_names, input_types, input_text, input_bytes, table_oid::int8, "
    "table_name, key, requested_by, requested_at, state, answered_by"
)


def _request(row: asyncpg.Record | None) -> Request | None:
    if row is None:
        return None
    values = dict(row)
    values["digest"] = bytes(values["digest"])
    values["table_oid"] = values.pop("table_oid")
    return Request(**values)


# -- the queue ------------------------------------------------------------------------------------


async def file_requests(
    conn: asyncpg.Connection, model_id: int, cache_table: str, wanted: list[NewRequest], role: str, query: str
) -> None:
    """One pending request per (function, input): a re-request keeps the one there. A request
    answered for an older version (whose label this version's cache lacks) is pending again."""
    sql = (
        "INSERT INTO sieve.label_queue (model_id, digest, input_names, input_types, input_text, "
        "input_bytes, table_oid, table_name, key, requested_by, query) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7::int8::oid, $8, $9, $10, $11) "
        "ON CONFLICT (model_id, digest) DO UPDATE SET state = 'pending', answered_by = NULL, "
        "answered_at = NULL WHERE sieve.label_queue.state <> 'pending' AND NOT EXISTS "
        f"(SELECT 1 FROM {cache_table} c WHERE c.digest = EXCLUDED.digest AND c.ordinal = 0)"
    )
    await conn.executemany(
        sql,
        [
            (
                model_id,
                w.digest,
                w.names,
                w.types,
                w.texts,
                w.blobs,
                w.table_oid,
                w.table_name,
                w.key,
                role,
                query,
            )
            for w in wanted
        ],
    )


async def count_pending(db: asyncpg.Pool, model_id: int, digests: list[bytes]) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM sieve.label_queue WHERE model_id = $1 AND digest = ANY($2::bytea[]) "
        "AND state = 'pending'",
        model_id,
        digests,
    )


async def mark_used(db: asyncpg.Pool, model_id: int, digests: list[bytes]) -> list[bytes]:
    """Answered labels a statement now reads: each counts once, as that statement's model call."""
    if not digests:
        return []
    # most reads find nothing newly answered: one probe of the partial index, not a big ANY()
    if not await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM sieve.label_queue WHERE model_id = $1 AND state = 'answered')", model_id
    ):
        return []
    rows = await db.fetch(
        "UPDATE sieve.label_queue SET state = 'used' WHERE model_id = $1 AND state = 'answered' "
        "AND digest = ANY($2::bytea[]) RETURNING digest",
        model_id,
        digests,
    )
    return [bytes(r[0]) for r in rows]


async def unmark_used(db: asyncpg.Pool, model_id: int, digests: list[bytes]) -> None:
    await db.execute(
        "UPDATE sieve.label_queue SET state = 'answered' WHERE model_id = $1 AND state = 'used' "
        "AND digest = ANY($2::bytea[])",
        model_id,
        digests,
    )


async def request_by_id(db: asyncpg.Pool | asyncpg.Connection, request_id: int) -> Request | None:
    return _request(
        await db.fetchrow(
            f"SELECT {_REQUEST_COLUMNS} FROM sieve.label_queue WHERE request_id = $1", request_id
        )
    )


async def request_by_source(db: asyncpg.Pool, model_id: int, table_oid: int, key: str) -> Request | None:
    return _request(
        await db.fetchrow(
            f"SELECT {_REQUEST_COLUMNS} FROM sieve.label_queue WHERE model_id = $1 "
            "AND table_oid = $2::int8::oid AND key = $3 ORDER BY state = 'pending' DESC, request_id LIMIT 1",
            model_id,
            table_oid,
            key,
        )
    )


async def request_by_digest(db: asyncpg.Pool, model_id: int, digest: bytes) -> Request | None:
    return _request(
        await db.fetchrow(
            f"SELECT {_REQUEST_COLUMNS} FROM sieve.label_queue WHERE model_id = $1 AND digest = $2",
            model_id,
            digest,
        )
    )


async def pending_requests(db: asyncpg.Pool, model_id: int, skip: list[int], limit: int) -> list[Request]:
    rows = await db.fetch(
        f"SELECT {_REQUEST_COLUMNS} FROM sieve.label_queue WHERE model_id = $1 AND state = 'pending' "
        "AND request_id <> ALL($2::int8[]) ORDER BY request_id LIMIT $3",
        model_id,
        list(skip),
        limit,
    )
    return [_request(r) for r in rows]


async def progress(db: asyncpg.Pool, model_id: int, role: str) -> tuple[int, int, int]:
    row = await db.fetchrow(
        "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state <> 'pending'), "
        "count(*) FILTER (WHERE state <> 'pending' AND answered_by = $2) "
        "FROM sieve.label_queue WHERE model_id = $1",
        model_id,
        role,
    )
    return int(row[0]), int(row[1]), int(row[2])


_SOURCE_KEY = (
    "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), pg_catalog.quote_ident(a.attname), "
    "pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary AND i.indnatts = 1 "
    "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] "
    "WHERE c.oid = $1::int8::oid"
)


async def source_exists(db: asyncpg.Pool, request: Request) -> bool:
    """Whether the row a request came from is still there (True when it names none)."""
    if request.table_oid is None or request.key is None:
        return True
    found = await db.fetchrow(_SOURCE_KEY, request.table_oid)
    if found is None:
        return False  # the table is gone, or no longer has a one-column primary key
    table, column, key_type = found
    # the key compared in its own type, so the primary key's index finds the row
    return await db.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {column} = $1::text::{key_type})", request.key
    )


# -- labels ---------------------------------------------------------------------------------------


async def lock_function(conn: asyncpg.Connection, model_id: int) -> None:
    """Take the function's label lock (in the caller's transaction)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1::int4, $2::int4)", LABEL_LOCK, model_id)


async def cached_label(
    conn: asyncpg.Connection, model_id: int, version: int, digest: bytes
) -> tuple[bool, Any]:
    """(is there a label, the label) of one input in the given version's cache."""
    row = await conn.fetchrow(
        f"SELECT {SCALAR_COLUMN} FROM {cache_table_name(model_id, version)} "
        "WHERE digest = $1 AND ordinal = 0",
        digest,
    )
    return (row is not None, row[0] if row is not None else None)


async def write_label(
    conn: asyncpg.Connection, model_id: int, version: int, digest: bytes, value_text: str, sql_type: str
) -> None:
    table = cache_table_name(model_id, version)
    await conn.execute(
        f"INSERT INTO {table} (digest, ordinal, {SCALAR_COLUMN}) VALUES ($1, 0, $2::text::{sql_type}) "
        f"ON CONFLICT (digest, ordinal) DO UPDATE SET {SCALAR_COLUMN} = EXCLUDED.{SCALAR_COLUMN}",
        digest,
        value_text,
    )


async def remove_label(conn: asyncpg.Connection, model_id: int, version: int, digest: bytes) -> None:
    await conn.execute(
        f"DELETE FROM {cache_table_name(model_id, version)} WHERE digest = $1 AND ordinal = 0", digest
    )


async def mark_answered(conn: asyncpg.Connection, request_id: int, role: str | None) -> None:
    """``role`` None: the request is pending again (its label was taken back)."""
    if role is None:
        await conn.execute(
            "UPDATE sieve.label_queue SET state = 'pending', answered_by = NULL, answered_at = NULL "
            "WHERE request_id = $1",
            request_id,
        )
        return
    await conn.execute(
        "UPDATE sieve.label_queue SET state = 'answered', answered_by = $2, answered_at = now() "
        "WHERE request_id = $1 AND state = 'pending'",
        request_id,
        role,
    )


async def add_history(
    conn: asyncpg.Connection,
    model_id: int,
    request_id: int | None,
    digest: bytes,
    action: str,
    value: Any,
    previous: Any,
    version: int,
    role: str,
) -> None:
    await conn.execute(
        "INSERT INTO sieve.label_history (model_id, request_id, digest, action, value, previous, version, "
        "labelled_by) VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8)",
        model_id,
        request_id,
        digest,
        action,
        _json_or_null(value),
        _json_or_null(previous),
        version,
        role,
    )
    await conn.execute(
        "SELECT pg_notify($1, $2)",
        NOTIFY_CHANNEL,
        json.dumps({"model_id": model_id, "request_id": request_id, "action": action}),
    )


async def last_entry(conn: asyncpg.Connection, model_id: int, digest: bytes) -> asyncpg.Record | None:
    """The latest label, relabel or undo of one input."""
    return await conn.fetchrow(
        "SELECT action, value, previous, labelled_by FROM sieve.label_history WHERE model_id = $1 "
        "AND digest = $2 ORDER BY entry_id DESC LIMIT 1",
        model_id,
        digest,
    )


def _json_or_null(value: Any) -> str | None:
    """A label as jsonb; SQL NULL for none (an undo has no value)."""
    if value is None:
        return None
    return json.dumps(value if isinstance(value, bool | int | float | str) else str(value))


# -- tokens ---------------------------------------------------------------------------------------


async def add_token(
    db: asyncpg.Pool, digest: bytes, role: str, database: str, model_id: int | None, scope: str, ttl_s: float
) -> datetime:
    return await db.fetchval(
        "INSERT INTO sieve.label_tokens (token_sha256, role, database, model_id, scope, expires_at) "
        "VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6)) RETURNING expires_at",
        digest,
        role,
        database,
        model_id,
        scope,
        float(ttl_s),
    )


async def find_token(db: asyncpg.Pool, digest: bytes) -> asyncpg.Record | None:
    """A token that has not expired: role, database, model id, function name, scope, expiry."""
    return await db.fetchrow(
        "SELECT t.role::text, t.database::text, t.model_id, m.name AS function, t.scope, t.expires_at "
        "FROM sieve.label_tokens t LEFT JOIN sieve.models m ON m.id = t.model_id "
        "WHERE t.token_sha256 = $1 AND t.expires_at > now()",
        digest,
    )


async def may_execute(db: asyncpg.Pool, role: str, model_id: int) -> bool | None:
    """Whether ``role`` may EXECUTE the labels function (None: no such function any more)."""
    row = await db.fetchrow(
        "SELECT pg_catalog.has_function_privilege(r.oid, f.function_oid, 'EXECUTE') "
        "FROM sieve.label_functions f, pg_catalog.pg_roles r WHERE f.model_id = $1 AND r.rolname = $2",
        model_id,
        role,
    )
    if row is None:
        exists = await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM sieve.label_functions WHERE model_id = $1)", model_id
        )
        return False if exists else None
    return bool(row[0])
