"""asyncpg through SieveDB: binary results, prepared statements, transactions, pools, errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from decimal import Decimal

import asyncpg
import pytest


def run(coro, timeout: float = 60):
    """Run a test's coroutine; a hang becomes a failure here, not pytest's 300 s timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def connect(server, **kwargs) -> asyncpg.Connection:
    return await asyncpg.connect(server.dsn(), timeout=15, **kwargs)


# The tests below end their connections with ``terminate()`` (drop the socket) so that each checks
# its own behaviour; the graceful ``close()`` handshake is tested on its own in test_close_*.


def test_connects_through_sieve(sieve_server):
    async def main():
        conn = await connect(sieve_server)
        try:
            version = await conn.fetchval("show server_version_num")
            return version, conn.get_server_version()
        finally:
            conn.terminate()

    version, info = run(main())
    assert int(version) // 10000 == 18
    assert info.major == 18


def test_binary_results_match_python_values(sieve_server):
    expected_ts = dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=dt.UTC)
    expected_uuid = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")

    async def main():
        conn = await connect(sieve_server)
        try:
            stmt = await conn.prepare(
                """select 42::int4, -9007199254740993::int8, 32767::int2, 1.5::float8, 0.25::float4,
                          'héllo wörld'::text, '\\x00ff10'::bytea, array[1, null, 3]::int[],
                          array['a', 'b c', null]::text[], '{"a": [1, 2], "b": null}'::json,
                          '{"b": 2, "a": 1}'::jsonb,
                          '2024-02-29 23:59:58.123456+00'::timestamptz,
                          12345678901234567890.123456789::numeric, 'NaN'::numeric,
                          'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, true, null::int"""
            )
            return await stmt.fetchrow(), [a.type.name for a in stmt.get_attributes()]
        finally:
            conn.terminate()

    row, types = run(main())
    assert types == [
        "int4",
        "int8",
        "int2",
        "float8",
        "float4",
        "text",
        "bytea",
        "int4[]",
        "text[]",
        "json",
        "jsonb",
        "timestamptz",
        "numeric",
        "numeric",
        "uuid",
        "bool",
        "int4",
    ]
    values = list(row.values())
    assert values[:7] == [42, -9007199254740993, 32767, 1.5, 0.25, "héllo wörld", b"\x00\xff\x10"]
    assert values[7] == [1, None, 3]
    assert values[8] == ["a", "b c", None]
    assert values[9] == '{"a": [1, 2], "b": null}'  # json keeps its text
    assert values[10] == '{"a": 1, "b": 2}'  # jsonb is normalised by Postgres
    assert values[11] == expected_ts
    assert values[12] == Decimal("12345678901234567890.123456789")
    assert values[13].is_nan()
    assert values[14] == expected_uuid
    assert values[15:] == [True, None]


def test_binary_parameters_round_trip(sieve_server):
    params = (
        7,
        2.718281828459045,
        "ünïcode ☃",
        bytes(range(256)),
        [1, 2, None, -4],
        ["x", None, "y z"],
        dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        Decimal("-0.000000000000000000001"),
        uuid.UUID(int=2**128 - 1),
    )

    async def main():
        conn = await connect(sieve_server)
        try:
            await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
            row = await conn.fetchrow(
                "select $1::int, $2::float8, $3::text, $4::bytea, $5::int[], $6::text[], "
                "$7::timestamptz, $8::numeric, $9::uuid",
                *params,
            )
            doc = await conn.fetchval("select $1::jsonb || '{\"added\": true}'", {"k": [1, "two", None]})
            return tuple(row), doc
        finally:
            conn.terminate()

    row, doc = run(main())
    assert row == params
    assert doc == {"k": [1, "two", None], "added": True}


def test_statement_reused_many_times(sieve_server):
    async def main():
        conn = await connect(sieve_server)
        try:
            stmt = await conn.prepare("select $1::int * 2, repeat('x', $1::int)")
            results = [tuple(await stmt.fetchrow(i)) for i in range(300)]
            # conn.fetchval with the same text goes through asyncpg's statement cache
            cached = [await conn.fetchval("select $1::int + 1", i) for i in range(300)]
            names = await conn.fetch(
                "select name, statement from pg_prepared_statements where name like '__asyncpg%'"
            )
            return results, cached, names
        finally:
            conn.terminate()

    results, cached, names = run(main())
    assert results == [(2 * i, "x" * i) for i in range(300)]
    assert cached == list(range(1, 301))
    statements = {r["statement"] for r in names}
    assert "select $1::int * 2, repeat('x', $1::int)" in statements
    assert "select $1::int + 1" in statements


def test_transactions_rollback_and_commit(sieve_server, unique_name):
    table = unique_name("apg_tx")

    async def main():
        conn = await connect(sieve_server)
        other = await connect(sieve_server)
        try:
            await conn.execute(f"create table {table} (id int primary key, note text)")

            with pytest.raises(RuntimeError, match="roll it back"):
                async with conn.transaction():
                    await conn.executemany(
                        f"insert into {table} values ($1, $2)", [(i, f"r{i}") for i in range(50)]
                    )
                    inside = await conn.fetchval(f"select count(*) from {table}")
                    outside = await other.fetchval(f"select count(*) from {table}")
                    raise RuntimeError("roll it back")
            after_rollback = await conn.fetchval(f"select count(*) from {table}")

            async with conn.transaction():
                await conn.executemany(
                    f"insert into {table} values ($1, $2)", [(i, f"c{i}") for i in range(10)]
                )
                with pytest.raises(asyncpg.UniqueViolationError) as caught:
                    async with conn.transaction():  # a savepoint, rolled back alone
                        await conn.execute(f"insert into {table} values (100, 'in savepoint')")
                        await conn.execute(f"insert into {table} values (1, 'duplicate')")
                await conn.execute(f"insert into {table} values (11, 'after savepoint')")
            committed = await other.fetch(f"select id, note from {table} order by id")
            return inside, outside, after_rollback, caught.value.sqlstate, [tuple(r) for r in committed]
        finally:
            await conn.execute(f"drop table if exists {table}")
            conn.terminate()
            other.terminate()

    inside, outside, after_rollback, sqlstate, committed = run(main())
    assert (inside, outside, after_rollback) == (50, 0, 0)
    assert sqlstate == "23505"
    assert committed == [(i, f"c{i}") for i in range(10)] + [(11, "after savepoint")]


def test_pool_concurrent_acquires_and_reset(sieve_server):
    async def main():
        pool = await asyncpg.create_pool(sieve_server.dsn(), min_size=1, max_size=4, timeout=15)
        try:

            async def work(i: int):
                async with pool.acquire() as conn:
                    # session state that the pool's reset query (one multi-statement simple
                    # Query: advisory unlock, CLOSE ALL, UNLISTEN *, RESET ALL) must undo
                    before = await conn.fetchval("show application_name")
                    await conn.execute(f"set application_name = 'worker{i}'")
                    await conn.execute("select pg_advisory_lock($1)", 1000 + i)
                    await conn.execute("listen sieve_pool_test")
                    pid = await conn.fetchval("select pg_backend_pid()")
                    await conn.execute("select pg_sleep(0.02)")
                    value = await conn.fetchval("select $1::int * 10", i)
                    return pid, value, before

            results = await asyncio.gather(*(work(i) for i in range(24)))
            async with pool.acquire() as conn:
                leftovers = await conn.fetchval(
                    "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"
                )
                listening = await conn.fetchval("select count(*) from pg_listening_channels()")
            return results, leftovers, listening, pool.get_size()
        finally:
            pool.terminate()

    results, leftovers, listening, size = run(main())
    assert [value for _, value, _ in results] == [10 * i for i in range(24)]
    pids = {pid for pid, _, _ in results}
    assert 2 <= len(pids) <= 4  # concurrent acquires got several backends...
    assert len(pids) < 24  # ...and released connections were reused
    assert {before for _, _, before in results} == {""}  # every reuse saw a reset session
    assert (leftovers, listening) == (0, 0)
    assert size <= 4


def test_error_then_success_on_same_connection(sieve_server):
    async def main():
        conn = await connect(sieve_server)
        try:
            errors = []
            with pytest.raises(asyncpg.DivisionByZeroError) as simple:
                await conn.execute("select 1 / 0")  # simple Query
            errors.append(simple.value)
            after_simple = await conn.fetchval("select 'ok'")

            with pytest.raises(asyncpg.DivisionByZeroError) as extended:
                await conn.fetchval("select $1::int / 0", 5)  # error at Execute
            errors.append(extended.value)
            after_extended = await conn.fetchval("select $1::int + 1", 1)

            # error while preparing: Parse + Describe + Flush, then asyncpg sends Sync
            with pytest.raises(asyncpg.PostgresSyntaxError) as syntax:
                await conn.prepare("selec 1")
            errors.append(syntax.value)
            with pytest.raises(asyncpg.UndefinedTableError) as undefined:
                await conn.fetch("select * from no_such_table_here where x = $1", 1)
            errors.append(undefined.value)
            after_prepare = await conn.fetchval("select 2 + 2")

            with pytest.raises(asyncpg.DivisionByZeroError):
                async with conn.transaction():
                    await conn.execute("select 1 / 0")
            in_tx = (conn.is_in_transaction(), await conn.fetchval("select 'after tx'"))
            return errors, (after_simple, after_extended, after_prepare, in_tx)
        finally:
            conn.terminate()

    errors, after = run(main())
    assert [e.sqlstate for e in errors] == ["22012", "22012", "42601", "42P01"]
    assert errors[0].message == "division by zero"
    assert errors[0].severity == "ERROR"
    assert 'relation "no_such_table_here" does not exist' in errors[3].message
    assert after == ("ok", 2, 4, (False, "after tx"))


def test_timeout_cancels_running_query(sieve_server):
    async def main():
        conn = await connect(sieve_server)
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(asyncio.TimeoutError):
                # asyncpg sends a CancelRequest with the key SieveDB handed out
                await conn.execute("select pg_sleep(30)", timeout=0.5)
            after = await conn.fetchval("select 'usable'")  # waits if the sleep was not cancelled
            return loop.time() - start, after
        finally:
            conn.terminate()

    elapsed, after = run(main())
    assert elapsed < 10
    assert after == "usable"


def test_cursor_copy_and_notifications(sieve_server, unique_name):
    table = unique_name("apg_copy")

    async def main():
        conn = await connect(sieve_server)
        other = await connect(sieve_server)
        try:
            # a portal read in chunks: Execute with a row limit, PortalSuspended, more Executes
            async with conn.transaction():
                total = count = 0
                async for record in conn.cursor("select generate_series(1, 20000) as n", prefetch=700):
                    total += record["n"]
                    count += 1
                cur = await conn.cursor("select generate_series(1, 100) as n")
                first = await cur.fetch(30)
                await cur.forward(20)
                after_skip = await cur.fetchrow()

            # binary COPY both ways
            await conn.execute(f"create table {table} (id int, label text, score float8)")
            records = [(i, f"label {i}", i / 4) for i in range(5000)]
            status = await conn.copy_records_to_table(table, records=records)
            back = await conn.fetch(f"select id, label, score from {table} order by id")
            out = bytearray()

            async def sink(chunk: bytes) -> None:
                out.extend(chunk)

            await conn.copy_from_query(f"select id, label from {table} where id < 3 order by id", output=sink)

            # asynchronous NotificationResponse messages delivered while the connection is idle
            received: asyncio.Queue = asyncio.Queue()
            await conn.add_listener("sieve_chan", lambda *args: received.put_nowait(args[1:]))
            await other.execute("notify sieve_chan, 'first'")
            await other.execute("select pg_notify('sieve_chan', $1)", "second")
            notes = [await asyncio.wait_for(received.get(), 5) for _ in range(2)]
            other_pid = await other.fetchval("select pg_backend_pid()")
            return (
                total,
                count,
                [r["n"] for r in first],
                after_skip["n"],
                status,
                [tuple(r) for r in back],
                bytes(out),
                records,
                notes,
                other_pid,
            )
        finally:
            await conn.execute(f"drop table if exists {table}")
            conn.terminate()
            other.terminate()

    total, count, first, after_skip, status, back, out, records, notes, other_pid = run(main())
    assert (total, count) == (sum(range(1, 20001)), 20000)
    assert first == list(range(1, 31))
    assert after_skip == 51
    assert status == "COPY 5000"
    assert back == records
    assert out == b"0\tlabel 0\n1\tlabel 1\n2\tlabel 2\n"
    # the notifying backend's real pid, the payloads in order
    assert notes == [(other_pid, "sieve_chan", "first"), (other_pid, "sieve_chan", "second")]


def test_backend_pid_is_consistent(sieve_server):
    """In Postgres the pid of BackendKeyData (asyncpg's get_server_pid(), libpq's PQbackendPID) is
    the pid that pg_backend_pid(), pg_stat_activity and NotificationResponse report; clients use it
    to skip their own notifications or to find their own session."""

    async def main():
        conn = await connect(sieve_server)
        try:
            received: asyncio.Queue = asyncio.Queue()
            await conn.add_listener("sieve_self", lambda _c, pid, _ch, payload: received.put_nowait(pid))
            await conn.execute("notify sieve_self")
            notified_pid = await asyncio.wait_for(received.get(), 5)
            return conn.get_server_pid(), await conn.fetchval("select pg_backend_pid()"), notified_pid
        finally:
            conn.terminate()

    key_pid, sql_pid, notified_pid = run(main())
    assert notified_pid == sql_pid
    assert key_pid == sql_pid, "BackendKeyData pid differs from the session's pg_backend_pid()"


def test_close_completes(sieve_server):
    """asyncpg's close() sends Terminate and waits until the server closes the socket, as
    Postgres does at once; SQLAlchemy's asyncpg dialect calls it with no timeout."""

    async def main():
        conn = await connect(sieve_server)
        assert await conn.fetchval("select 1") == 1
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            await asyncio.wait_for(conn.close(), 3)
        except TimeoutError:
            conn.terminate()
            pytest.fail("asyncpg close() hung: SieveDB did not close the client socket after Terminate")
        return loop.time() - start, conn.is_closed()

    elapsed, closed = run(main())
    assert closed
    assert elapsed < 2


def test_pool_close_completes(sieve_server):
    async def main():
        pool = await asyncpg.create_pool(sieve_server.dsn(), min_size=3, max_size=3, timeout=15)
        assert await pool.fetchval("select 1") == 1
        try:
            await asyncio.wait_for(pool.close(), 3)
        except TimeoutError:
            pool.terminate()
            pytest.fail("asyncpg pool.close() hung: SieveDB did not close the client sockets after Terminate")

    run(main())
