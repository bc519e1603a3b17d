"""psycopg 3 (libpq) through SieveDB: both query protocols, server-side prepares, pipeline mode,
COPY both ways, notices and ParameterStatus."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import threading

import psycopg
import pytest
from psycopg import errors


@pytest.fixture()
def conn(sieve_server):
    with psycopg.connect(sieve_server.dsn(), autocommit=True, connect_timeout=15) as conn:
        yield conn


@pytest.fixture()
def table(conn, unique_name):
    name = unique_name("pg3")
    conn.execute(f"create table {name} (id int primary key, txt text)")
    yield name
    conn.execute(f"drop table if exists {name}")


def prepared_statements(conn) -> dict[str, str]:
    rows = conn.execute("select name, statement from pg_prepared_statements", prepare=False).fetchall()
    return dict(rows)


def test_connects_through_sieve(conn, sieve_server):
    # SieveDB logs each session with the client's address: find this connection's own port there
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        local_port = sock.getsockname()[1]
    # (SieveDB writes that line just after relaying ReadyForQuery: a round trip makes sure it is out)
    assert conn.execute("select 1").fetchone() == (1,)
    assert f"session ready peer=127.0.0.1:{local_port} user=postgres" in sieve_server.log()
    assert conn.info.server_version // 10000 == 18
    assert conn.info.parameter_status("server_version").startswith("18")
    assert conn.info.parameter_status("DateStyle").startswith("ISO")
    assert conn.info.parameter_status("integer_datetimes") == "on"


def test_simple_query_protocol(conn):
    cur = psycopg.ClientCursor(conn)
    # client-side binding: the statement text goes as one simple Query, several statements included
    cur.execute("select %s::int + 1 as a, %s as b; select 'second' as c", (41, "it's quoted"))
    assert [d.name for d in cur.description] == ["a", "b"]
    assert cur.fetchall() == [(42, "it's quoted")]
    assert cur.nextset()
    assert cur.fetchall() == [("second",)]
    assert not cur.nextset()

    # conn.execute with no parameters uses the simple protocol too (several results)
    cur = conn.execute("select 1; select 2, 3; ")
    assert cur.fetchall() == [(1,)]
    assert cur.nextset() and cur.fetchall() == [(2, 3)]


def test_extended_protocol_with_params(conn):
    row = conn.execute(
        "select %s::int * 2, %s::text, %s::numeric, %s::date, %s::int[], %s::bytea, %s::bool",
        (21, "wörld", "1.50", dt.date(2024, 2, 29), [1, 2, 3], b"\x00\x01", None),
    ).fetchone()
    assert row == (42, "wörld", pytest.approx(1.5), dt.date(2024, 2, 29), [1, 2, 3], b"\x00\x01", None)

    # binary results through the same path
    cur = conn.cursor(binary=True)
    assert cur.execute("select %s::float8 / 4, %s::text", (10.0, "bin")).fetchone() == (2.5, "bin")


def test_prepared_after_threshold(sieve_server):
    query = "select %s::int + 1000 as n"
    with psycopg.connect(sieve_server.dsn(), autocommit=True) as conn:
        assert conn.prepare_threshold == 5
        seen = []
        for i in range(7):
            assert conn.execute(query, (i,)).fetchone() == (i + 1000,)
            seen.append(sorted(prepared_statements(conn).values()))
        # not prepared at first; after the threshold the statement lives in the backend
        assert seen[0] == []
        assert seen[-1] == ["select $1::int + 1000 as n"]


def test_prepare_threshold_zero_and_prepared_max(sieve_server):
    with psycopg.connect(sieve_server.dsn(), autocommit=True, prepare_threshold=0) as conn:
        conn.prepared_max = 2
        for n in range(3):
            assert conn.execute(f"select %s::int * {n + 2}", (5,)).fetchone() == (5 * (n + 2),)
        statements = prepared_statements(conn)
        # only prepared_max statements survive; psycopg closed the oldest one on the server
        assert sorted(statements.values()) == ["select $1::int * 3", "select $1::int * 4"]
        assert all(name.startswith("_pg3_") for name in statements)
        # executing a surviving one again reuses it
        assert conn.execute("select %s::int * 4", (7,)).fetchone() == (28,)
        assert len(prepared_statements(conn)) == 2
    # prepare=False never prepares, prepare=True prepares at the first execution
    with psycopg.connect(sieve_server.dsn(), autocommit=True) as conn:
        for _ in range(8):
            conn.execute("select %s::int - 1", (1,), prepare=False)
        assert prepared_statements(conn) == {}
        assert conn.execute("select %s::text || '!'", ("b",), prepare=True).fetchone() == ("b!",)
        assert list(prepared_statements(conn).values()) == ["select $1::text || '!'"]


def test_pipeline_mode(conn, table):
    with conn.pipeline() as pipeline:
        cur = conn.cursor()
        for i in range(2000):
            cur.execute(f"insert into {table} values (%s, %s)", (i, f"p{i}"))
        pipeline.sync()
        cur.executemany(f"insert into {table} values (%s, %s)", [(i, f"m{i}") for i in range(2000, 3000)])
        count = conn.execute(f"select count(*), sum(id) from {table}")
    assert count.fetchone() == (3000, sum(range(3000)))


def test_error_inside_pipeline(conn, table):
    with pytest.raises(errors.UniqueViolation) as caught, conn.pipeline() as pipeline:
        for i in range(5):
            conn.execute(f"insert into {table} values (%s, 'before')", (i,))
        pipeline.sync()  # commits the five rows (autocommit)
        conn.execute(f"insert into {table} values (%s, 'after')", (100,))
        conn.execute(f"insert into {table} values (%s, 'dup')", (1,))
        conn.execute(f"insert into {table} values (%s, 'skipped')", (101,))
    assert caught.value.sqlstate == "23505"
    assert caught.value.diag.constraint_name == f"{table}_pkey"
    # the batch after the sync point was aborted as a whole; the connection works on
    rows = conn.execute(f"select id, txt from {table} order by id").fetchall()
    assert rows == [(i, "before") for i in range(5)]
    with conn.pipeline():
        conn.execute(f"insert into {table} values (%s, 'again')", (200,))
    assert conn.execute(f"select txt from {table} where id = 200").fetchone() == ("again",)


def test_copy_in_and_out_100k_rows(conn, table):
    n = 100_000
    rows = [(i, f"row {i} ü\t\\ {i * 7 % 1000}") for i in range(n)]
    # the COPY text form of the rows, escaped as Postgres writes it
    expected_text = "".join(
        f"{i}\t{txt.replace(chr(92), chr(92) * 2).replace(chr(9), chr(92) + 't')}\n" for i, txt in rows
    ).encode()

    with conn.cursor().copy(f"copy {table} (id, txt) from stdin") as copy:
        for row in rows:
            copy.write_row(row)
    server_side = conn.execute(
        f"select count(*), sum(id), md5(string_agg(txt, '|' order by id)) from {table}"
    ).fetchone()
    assert server_side == (
        n,
        sum(range(n)),
        hashlib.md5("|".join(txt for _, txt in rows).encode()).hexdigest(),
    )

    received = bytearray()
    with conn.cursor().copy(f"copy (select id, txt from {table} order by id) to stdout") as copy:
        for chunk in copy:
            received += chunk
    assert len(received) == len(expected_text)
    assert hashlib.md5(received).hexdigest() == hashlib.md5(expected_text).hexdigest()

    # and parsed back by psycopg row by row
    with conn.cursor().copy(f"copy (select id, txt from {table} order by id) to stdout") as copy:
        copy.set_types(["int4", "text"])
        back = list(copy.rows())
    assert back == rows


def test_copy_error_aborts_cleanly(conn, table):
    with (
        pytest.raises(errors.InvalidTextRepresentation),
        conn.cursor().copy(f"copy {table} (id, txt) from stdin") as copy,
    ):
        copy.write(b"1\tok\nnot-a-number\tbad\n")
    assert conn.execute(f"select count(*) from {table}").fetchone() == (0,)
    # a COPY the client gives up on: psycopg sends CopyFail
    with pytest.raises(errors.QueryCanceled), conn.cursor().copy(f"copy {table} from stdin") as copy:
        copy.write_row((1, "x"))
        raise errors.QueryCanceled("client gave up")
    assert conn.execute("select 'usable'").fetchone() == ("usable",)


def test_notice_delivered(conn):
    notices = []
    # a Diagnostic is only valid inside the handler: copy its fields out
    conn.add_notice_handler(
        lambda d: notices.append((d.severity_nonlocalized, d.sqlstate, d.message_primary, d.message_hint))
    )
    conn.execute("DO $$ BEGIN RAISE NOTICE 'hi'; END $$")
    conn.execute("DO $$ BEGIN RAISE WARNING 'careful: %', 42 USING HINT = 'a hint'; END $$")
    assert notices == [
        ("NOTICE", "00000", "hi", None),
        ("WARNING", "01000", "careful: 42", "a hint"),
    ]


def test_parameter_status_updates(conn):
    assert conn.info.parameter_status("TimeZone") not in (None, "Asia/Tokyo")
    conn.execute("SET timezone = 'Asia/Tokyo'")
    assert conn.info.parameter_status("TimeZone") == "Asia/Tokyo"
    # psycopg builds timestamptz values in the session's time zone
    value = conn.execute("select '2024-01-01 00:00:00+00'::timestamptz").fetchone()[0]
    assert value.utcoffset() == dt.timedelta(hours=9)
    assert value == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

    conn.execute("SET datestyle = 'ISO, DMY'")
    assert conn.info.parameter_status("DateStyle") == "ISO, DMY"
    assert conn.execute("select '03/04/2024'::date").fetchone() == (dt.date(2024, 4, 3),)

    conn.execute("SET application_name = 'sieve-client-test'")
    assert conn.info.parameter_status("application_name") == "sieve-client-test"
    conn.execute("RESET ALL")
    assert conn.info.parameter_status("DateStyle") == "ISO, MDY"
    assert conn.info.parameter_status("application_name") == ""


def test_error_then_next_statement(conn):
    with pytest.raises(errors.DivisionByZero) as caught:
        conn.execute("select 1 / %s", (0,))
    assert caught.value.sqlstate == "22012"
    assert caught.value.diag.severity_nonlocalized == "ERROR"
    assert conn.execute("select 'ok'").fetchone() == ("ok",)
    with pytest.raises(errors.SyntaxError):
        conn.execute("selec 1")
    assert conn.execute("select %s::int", (5,)).fetchone() == (5,)


def test_cancel_running_query(conn):
    timer = threading.Timer(0.3, conn.cancel_safe)  # a CancelRequest with SieveDB's key
    timer.start()
    try:
        with pytest.raises(errors.QueryCanceled) as caught:
            conn.execute("select pg_sleep(20)")
    finally:
        timer.cancel()
    assert caught.value.sqlstate == "57014"
    assert conn.execute("select 'after cancel'").fetchone() == ("after cancel",)


def test_large_result_and_server_side_cursor(conn):
    # ~40 MB of rows: more than the socket buffers hold, so SieveDB's flow control takes part
    cur = conn.execute("select i, repeat(chr(97 + i % 26), 2000) from generate_series(1, 20000) as i")
    size = count = total = 0
    for i, text in cur:
        count += 1
        total += i
        size += len(text)
        assert text == chr(97 + i % 26) * 2000
    assert (count, total, size) == (20000, sum(range(1, 20001)), 40_000_000)

    # a named (server-side) cursor: DECLARE, then FETCH in batches inside a transaction
    conn.autocommit = False
    with conn.cursor(name="sieve_named") as named:
        named.itersize = 333
        named.execute("select g, g * g from generate_series(1, 5000) g")
        assert named.fetchone() == (1, 1)
        assert named.fetchmany(2) == [(2, 4), (3, 9)]
        rest = list(named)
    conn.rollback()
    assert len(rest) == 4997 and rest[-1] == (5000, 25_000_000)


def test_large_parameter_message(conn):
    # one Bind message of ~16 MB arrives in many TCP reads and must be forwarded whole
    blob = os.urandom(16 * 1024 * 1024)
    row = conn.execute("select length(%b::bytea), md5(%b::bytea)", (blob, blob)).fetchone()
    assert row == (len(blob), hashlib.md5(blob).hexdigest())
    echoed = conn.execute("select %b::bytea", (blob,), binary=True).fetchone()[0]
    assert echoed == blob


def test_protocol_3_2_and_long_cancel_key(sieve_server):
    """libpq 18 can ask for protocol 3.2, whose BackendKeyData carries a 32-byte secret."""
    if psycopg.pq.version() < 180000:
        pytest.skip(f"psycopg's libpq {psycopg.pq.version()} predates protocol 3.2")
    with psycopg.connect(sieve_server.dsn(), autocommit=True, max_protocol_version="3.2") as conn:
        assert conn.pgconn.protocol_version == 3
        assert conn.pgconn.full_protocol_version == 30002
        timer = threading.Timer(0.3, conn.cancel_safe)
        timer.start()
        try:
            with pytest.raises(errors.QueryCanceled):
                conn.execute("select pg_sleep(20)")
        finally:
            timer.cancel()
        assert conn.execute("select %s::int", (3,)).fetchone() == (3,)
