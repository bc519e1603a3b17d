"""The labelling page's Python API (planner/labels/desk.py), called directly on a planner of this
process over the test server's backing Postgres: tokens, grants re-checked at every call, the
queue, double submission, rows that are gone, undo."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import psycopg
import pytest

from planner.classify import Classifier
from planner.labels.desk import Grant, LabelDesk, LabelError, database_of
from planner.materialize import Databases
from planner.planner import Planner


def error_of(conn, sql: str) -> str:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql)
    return info.value.sqlstate


def with_desk(world, body: Callable[[LabelDesk, asyncpg.Pool], Awaitable[None]]) -> None:
    """Run ``body`` against a desk of a planner of this process (SieveDB's own connections)."""

    async def run() -> None:
        pool = await asyncpg.create_pool(
            host=str(world.backing_socket_dir), user="postgres", database="postgres", min_size=1, max_size=4
        )
        try:
            planner = Planner(Databases(read=pool, write=pool), None, Classifier(), Path("."))
            await planner.refresh()
            await body(planner.labels, pool)
            await planner.assertions.settle()
        finally:
            await pool.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def queue(world):
    """A labels function with pending requests for photos 1-6 (asked by alice), another one."""
    with world.connect() as conn:
        for name in ("desk_bird", "desk_other"):
            conn.execute(f"CREATE FUNCTION {name}(image bytea) RETURNS boolean LANGUAGE labels AS 'Bird?'")
            conn.execute(f"REVOKE EXECUTE ON FUNCTION {name}(bytea) FROM PUBLIC")
            conn.execute(f"GRANT EXECUTE ON FUNCTION {name}(bytea) TO alice")
        conn.execute("CREATE TABLE desk_photos (id int PRIMARY KEY, image bytea)")
        conn.execute("GRANT SELECT ON desk_photos TO alice")
        conn.execute(
            "INSERT INTO desk_photos SELECT g, decode(lpad(to_hex(g), 4, '0'), 'hex') "
            "FROM generate_series(1, 6) g"
        )
    with world.connect("alice") as alice:
        for name in ("desk_bird", "desk_other"):
            assert error_of(alice, f"SELECT id FROM desk_photos WHERE {name}(image)") == "SV001"
    return world


def status_of(call: Awaitable) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        with pytest.raises(LabelError) as info:
            await call
        return info.value.http_status

    return run


def test_tokens_resolve_to_their_grant_and_unknown_or_expired_ones_are_401(queue):
    async def body(desk: LabelDesk, pool: asyncpg.Pool) -> None:
        token = await desk.issue("alice", "desk_bird", "label", 3600)
        assert database_of(token) == "postgres"
        grant = await desk.resolve(token)
        assert (grant.role, grant.database, grant.function, grant.scope) == (
            "alice",
            "postgres",
            "desk_bird",
            "label",
        )
        stored = await pool.fetchval(
            "SELECT count(*) FROM sieve.label_tokens WHERE token_sha256 = sha256($1)", token.encode()
        )
        assert stored == 1  # only its digest is kept
        for bad in ("", "nonsense", token[:-2] + "xx", "b3RoZXI." + token.split(".", 1)[1]):
            assert await status_of(desk.resolve(bad))() == 401
        await pool.execute(
            "UPDATE sieve.label_tokens SET expires_at = now() - interval '1 s' "
            "WHERE token_sha256 = sha256($1)",
            token.encode(),
        )
        assert await status_of(desk.resolve(token))() == 401
        assert (
            await status_of(desk.issue("bob", "desk_bird", "label", 3600))() == 403
        )  # bob may not execute it
        status = await desk.resolve(await desk.issue("bob", None, "status", 60))
        assert (status.scope, status.function) == ("status", None)
        assert await status_of(desk.task(status))() == 403  # a status link labels nothing

    with_desk(queue, body)


def test_the_queue_is_served_item_by_item_and_a_token_labels_only_its_function(queue):
    async def body(desk: LabelDesk, pool: asyncpg.Pool) -> None:
        grant = await desk.resolve(await desk.issue("alice", "desk_bird", "label", 3600))
        other = await desk.resolve(await desk.issue("alice", "desk_other", "label", 3600))
        task = await desk.task(grant)
        assert (task.function, task.instructions, task.choices, task.result_type) == (
            "desk_bird",
            "Bird?",
            [True, False],
            "boolean",
        )
        item = await desk.next_item(grant)
        assert (item.function, item.table, item.key, item.requested_by) == (
            "desk_bird",
            "public.desk_photos",
            "1",
            "alice",
        )
        assert [(i.name, i.sql_type, i.value) for i in item.inputs] == [
            ("image", "bytea", bytes.fromhex("0001"))
        ]
        skipped = await desk.next_item(grant, skip=[item.request_id])
        assert skipped.key == "2"
        # a token for another function cannot label this one's requests
        assert await status_of(desk.give(other, item.request_id, "true"))() == 403
        before = await desk.progress(grant)
        given = await desk.give(grant, item.request_id, "true")
        assert (given.value, given.previous, given.changed) == (True, None, True)
        after = await desk.progress(grant)
        assert (after.pending, after.answered, after.answered_by_role) == (
            before.pending - 1,
            before.answered + 1,
            before.answered_by_role + 1,
        )
        assert (await desk.next_item(grant)).key == "2"
        assert await status_of(desk.give(grant, item.request_id, "maybe"))() == 400  # not a boolean
        assert await status_of(desk.give(grant, 10**9, "true"))() == 404

    with_desk(queue, body)


def test_double_submission_first_wins_and_undo_takes_back_ones_own_label(queue):
    async def body(desk: LabelDesk, pool: asyncpg.Pool) -> None:
        alice = await desk.resolve(await desk.issue("alice", "desk_bird", "label", 3600))
        boss = await desk.resolve(await desk.issue("postgres", "desk_bird", "label", 3600))
        item = await desk.next_item(alice)
        first = await desk.give(alice, item.request_id, "false")
        again = await desk.give(alice, item.request_id, "false")
        assert (first.changed, again.changed, again.version) == (True, False, first.version)
        # another labeller answering the same request differently: the first answer stands
        assert await status_of(desk.give(boss, item.request_id, "true"))() == 409
        assert await status_of(desk.undo(boss, item.request_id))() == 409  # not boss's label
        # the labeller changing their own answer relabels: a new version
        changed = await desk.give(alice, item.request_id, "true")
        assert (changed.previous, changed.value, changed.version) == (False, True, first.version + 1)
        version = await pool.fetchval("SELECT version FROM sieve.models WHERE name = 'desk_bird'")
        assert version == changed.version
        await desk.undo(alice, item.request_id)  # back to false, in a new version
        label = await pool.fetchval(
            "SELECT value FROM sieve.label_history WHERE request_id = $1 ORDER BY entry_id DESC LIMIT 1",
            item.request_id,
        )
        assert label is None  # the undo entry
        assert await pool.fetchval("SELECT version FROM sieve.models WHERE name = 'desk_bird'") == version + 1
        assert await status_of(desk.undo(alice, item.request_id))() == 409  # one undo per answer
        # undoing a first label puts the request back in the queue
        second = await desk.next_item(alice)
        await desk.give(alice, second.request_id, "true")
        assert (await desk.next_item(alice)).request_id != second.request_id
        await desk.undo(alice, second.request_id)
        assert (await desk.next_item(alice)).request_id == second.request_id

    with_desk(queue, body)


def test_a_request_whose_row_is_gone_is_skipped_and_refused_and_revocation_bites_at_once(queue):
    async def body(desk: LabelDesk, pool: asyncpg.Pool) -> None:
        grant = await desk.resolve(await desk.issue("alice", "desk_other", "label", 3600))
        item = await desk.next_item(grant)
        assert item.key == "1"
        await pool.execute("DELETE FROM desk_photos WHERE id = 1")
        assert (await desk.next_item(grant)).key == "2"  # skipped
        assert await status_of(desk.give(grant, item.request_id, "true"))() == 410
        written = await pool.fetchval(
            "SELECT count(*) FROM sieve.label_history WHERE request_id = $1", item.request_id
        )
        assert written == 0
        await pool.execute("REVOKE EXECUTE ON FUNCTION desk_other(bytea) FROM alice")
        try:
            assert await status_of(desk.next_item(grant))() == 403
            assert await status_of(desk.progress(grant))() == 403
        finally:
            await pool.execute("GRANT EXECUTE ON FUNCTION desk_other(bytea) TO alice")

    with_desk(queue, body)


def test_a_forged_grant_gets_nothing(queue):
    async def body(desk: LabelDesk, pool: asyncpg.Pool) -> None:
        model_id = await pool.fetchval("SELECT id FROM sieve.models WHERE name = 'desk_bird'")
        forged = Grant("bob", "postgres", "desk_bird", "label", None, model_id)
        assert await status_of(desk.next_item(forged))() == 403

    with_desk(queue, body)
