"""Approximate queries over the extended query protocol: psycopg with parameters and prepared
statements, asyncpg (binary results). Postgres prepares the statement without its clause, so it
describes parameters and columns itself; each execution goes to the planner with the bound values."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import psycopg
import pytest

WHERE = "FROM digits WHERE digit_oracle(pixels) = 7"
PROXY = "USING PROXY digit_proxy_p7(pixels)"
RT = f"SELECT id {WHERE} AND id < $1 RECALL TARGET 90% CONFIDENCE 95% BUDGET 300 {PROXY}"
AGG = f"SELECT count(*), avg(score) {WHERE} AND id < $1 ERROR TARGET 10% CONFIDENCE 95% BUDGET 600 {PROXY}"
LIMIT = f"SELECT id {WHERE} AND id > $1 LIMIT 5 {PROXY}"


def _pg(sql: str) -> str:
    """The statement in psycopg's placeholder style."""
    return sql.replace("%", "%%").replace("$1", "%s")


def _literal(sql: str, value: int) -> str:
    return sql.replace("$1", str(value))


def _ids(rows) -> set[int]:
    return {r[0] for r in rows}


def _simple(world, sql: str, seed: int) -> set[int]:
    """The answer over the simple query protocol under ``sieve.seed``."""
    with world.connect(prepare_threshold=None) as conn:
        conn.execute(f"set sieve.seed = {seed}")
        return _ids(conn.execute(sql).fetchall())


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def test_psycopg_parameters_give_the_simple_protocol_answer(approx_world):
    expected = _simple(approx_world, _literal(RT, 1000), seed=11)
    with approx_world.connect() as conn:
        conn.execute("set sieve.seed = 11")
        cur = conn.execute(_pg(RT), (1000,))
        assert [(d.name, d.type_code) for d in cur.description] == [("id", 23)]  # int4
        rows = cur.fetchall()
        assert _ids(rows) == expected and expected
        assert all(isinstance(r[0], int) and r[0] < 1000 for r in rows)
        mode, query = conn.execute(
            "select mode, query from sieve.query_log order by query_id desc limit 1"
        ).fetchone()
        assert (mode, query) == ("recall", RT)


def test_psycopg_prepared_statement_runs_with_new_parameters(approx_world):
    with approx_world.connect() as conn:
        conn.execute("set sieve.seed = 12")
        answers = {v: _ids(conn.execute(_pg(RT), (v,), prepare=True).fetchall()) for v in (400, 900, 1500)}
        prepared = conn.execute("select statement from pg_prepared_statements").fetchall()
        assert any("RECALL" not in s and "digit_oracle" in s for (s,) in prepared), prepared
    for bound, ids in answers.items():
        assert ids and max(ids) < bound
    assert answers[1500] == _simple(approx_world, _literal(RT, 1500), seed=12)


def test_asyncpg_fetch_and_prepared_statements_in_binary(approx_world):
    expected = _simple(approx_world, _literal(RT, 1200), seed=13)
    truth = _simple(approx_world, f"select id {WHERE} and id < 1200", seed=13)

    async def scenario():
        conn = await asyncpg.connect(approx_world.server.dsn())
        try:
            await conn.execute("set sieve.seed = 13")
            rows = await conn.fetch(RT, 1200)
            assert all(type(r["id"]) is int for r in rows)
            assert _ids(rows) == expected
            stmt = await conn.prepare(RT)
            assert [a.name for a in stmt.get_attributes()] == ["id"]
            assert [t.name for t in stmt.get_parameters()] == ["int4"]
            again = await stmt.fetch(1200)
            assert _ids(again) == expected
            fewer = await stmt.fetch(300)
            assert fewer and max(_ids(fewer)) < 300
            count, avg = await conn.fetchrow(AGG, 1200)
            assert type(count) is int and type(avg) is float
            assert count == pytest.approx(len(truth), rel=0.35)
            agg = await conn.prepare(AGG)
            for bound in (600, 1797):
                count, avg = await agg.fetchrow(bound)
                assert type(count) is int and 0 < count < bound
                assert 0.0 < avg < 1.0
            ids = [r["id"] for r in await conn.fetch(LIMIT, 100)]
            assert len(ids) == 5 and min(ids) > 100
            exact = await conn.fetchval(
                "select count(*) from digits where id = any($1::int[]) and digit_oracle(pixels) = 7", ids
            )
            assert exact == 5
            plan = [r[0] for r in await conn.fetch("EXPLAIN " + RT, 100)]
            assert plan and "Approximate" in plan[0]
        finally:
            await conn.close()

    _run(scenario())


def test_psycopg_limit_and_aggregates_with_parameters(approx_world):
    with approx_world.connect() as conn:
        ids = _ids(conn.execute(_pg(LIMIT), (900,)).fetchall())
        assert len(ids) == 5 and min(ids) > 900
        (count, avg), *_ = conn.execute(_pg(AGG), (1797,)).fetchall()
        assert isinstance(count, int) and count > 0 and 0.0 < avg < 1.0
        with conn.pipeline():  # Bind/Describe/Execute then Flush: settings reset at the Sync
            first = conn.execute(_pg(LIMIT), (50,))
            assert len(first.fetchall()) == 5
            second = conn.execute("select count(*) from digits where id < %s", (30,))
        assert second.fetchone() == (30,)
        assert conn.execute("select current_setting('sieve.lenient', true)").fetchone()[0] in ("", "off")


def test_bad_clause_or_plan_is_an_error_and_the_session_goes_on(approx_world):
    bad_clause = RT.replace("90%", "150%")
    bad_proxy = RT.replace("digit_proxy_p7(pixels)", "label")  # known at Bind: out of [0, 1]
    with approx_world.connect() as conn:
        for sql, words in ((bad_clause, "RECALL TARGET"), (bad_proxy, "[0, 1]")):
            for prepare in (False, True):
                with pytest.raises(psycopg.Error) as caught:
                    conn.execute(_pg(sql), (1000,), prepare=prepare)
                assert caught.value.sqlstate == "22023" and words in str(caught.value)
                assert conn.execute("select 1").fetchone() == (1,)

    async def scenario():
        conn = await asyncpg.connect(approx_world.server.dsn())
        try:
            for sql in (bad_clause, bad_proxy):
                with pytest.raises(asyncpg.PostgresError) as caught:
                    await conn.fetch(sql, 1000)
                assert caught.value.sqlstate == "22023"
                assert await conn.fetchval("select 2") == 2
        finally:
            await conn.close()

    _run(scenario())


def test_an_error_inside_a_transaction_aborts_it(approx_world):
    with approx_world.connect() as conn:
        for sql in (RT.replace("BUDGET 300", "BUDGET 0"), RT.replace("digit_proxy_p7(pixels)", "label")):
            conn.execute("begin")
            assert _ids(conn.execute(_pg(RT), (200,)).fetchall())
            with pytest.raises(psycopg.Error) as caught:
                conn.execute(_pg(sql), (1000,))
            assert caught.value.sqlstate == "22023"
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                conn.execute(_pg(RT), (200,))
            conn.execute("rollback")
            assert conn.execute("select 3").fetchone() == (3,)


def test_prepared_model_statements_survive_planner_queries_and_failed_parses(approx_world):
    """Not approximate: the unnamed statement psycopg binds outlives the planner's own queries
    in the session (sieve.* settings read), and a Parse Postgres rejects ends the batch cleanly."""
    with approx_world.connect() as conn:
        conn.execute("set sieve.seed = 1")
        assert conn.execute("select digit_oracle(pixels) from digits where id = %s", (7,)).fetchone()
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("select digit_oracle(pixels) from no_such_table where id = %s", (7,))
        assert conn.execute("select 4").fetchone() == (4,)


def test_raw_batch_split_across_writes_gets_exactly_postgres_replies(approx_world):
    """One ParseComplete (the client's), none for SieveDB's own Parse; a Bind split mid-frame and
    the rest of the batch arriving later are held, not duplicated."""
    import struct
    import time

    from tests.support.rawpg import RawConnection, message

    sql = RT.encode() + b"\0"
    parse = message(b"P", b"s1\0" + sql + struct.pack("!hi", 1, 23))
    value = b"800"
    bind = message(b"B", b"\0s1\0" + struct.pack("!hhi", 0, 1, len(value)) + value + struct.pack("!hh", 1, 1))
    rest = message(b"D", b"P\0") + message(b"E", b"\0" + struct.pack("!i", 0)) + message(b"S", b"")
    server = approx_world.server
    raw = RawConnection(server.host, server.port)
    try:
        raw.login()
        raw.send(parse + bind[:7])
        time.sleep(0.2)
        raw.send(bind[7:])
        time.sleep(0.2)
        raw.send(rest)
        replies = raw.read_until(b"Z")
        kinds = [kind for kind, _ in replies if kind != b"N"]  # the planner's notices aside
        assert kinds[:3] == [b"1", b"2", b"T"] and kinds[-2:] == [b"C", b"Z"], kinds
        assert set(kinds[3:-2]) == {b"D"}
        rows = [struct.unpack("!hii", body) for kind, body in replies if kind == b"D"]
        assert rows and all(n == 1 and size == 4 and ident < 800 for n, size, ident in rows)  # binary int4
        raw.send(message(b"Q", b"select 1\0"))
        assert [kind for kind, _ in raw.read_until(b"Z")] == [b"T", b"D", b"C", b"Z"]
    finally:
        raw.close()


# --- the clause's own values as bound parameters ----------------------------------------------

BOUND = f"SELECT id {WHERE} AND id < $3 RECALL TARGET $2 CONFIDENCE $4 BUDGET $1 {PROXY}"
BOUND_LITERAL = f"SELECT id {WHERE} AND id < 1000 RECALL TARGET 90% CONFIDENCE 99% BUDGET 300 {PROXY}"


def _logged(conn) -> tuple:
    return conn.execute(
        "select mode, target, confidence, model_calls from sieve.query_log order by query_id desc limit 1"
    ).fetchone()


def test_asyncpg_binds_targets_confidence_and_budget_as_typed_parameters(approx_world):
    expected = _simple(approx_world, BOUND_LITERAL, seed=21)

    async def scenario():
        conn = await asyncpg.connect(approx_world.server.dsn())
        try:
            await conn.execute("set sieve.seed = 21")
            stmt = await conn.prepare(BOUND)
            # what the server describes: BUDGET int8, fractions float8, the body's own as inferred
            assert [t.name for t in stmt.get_parameters()] == ["int8", "float8", "int4", "float8"]
            assert _ids(await stmt.fetch(300, 0.9, 1000, 0.99)) == expected
            percent = BOUND.replace("RECALL TARGET $2", "RECALL TARGET $2%")
            assert _ids(await conn.fetch(percent, 300, 90, 1000, 0.99)) == expected
            return [
                tuple(r) for r in await conn.fetch("select mode, target, confidence from sieve.query_log")
            ]
        finally:
            await conn.close()

    logged = _run(scenario())
    assert logged[-1] == ("recall", 0.9, 0.99)


def test_psycopg_binds_clause_parameters_and_keeps_the_budget(approx_world):
    expected = _simple(approx_world, BOUND_LITERAL, seed=22)
    # psycopg numbers placeholders in order: id < $1 ... RECALL TARGET $2 CONFIDENCE $3 BUDGET $4
    sql = f"SELECT id {WHERE} AND id < %s RECALL TARGET %s CONFIDENCE %s BUDGET %s {PROXY}"
    with approx_world.connect() as conn:
        conn.execute("set sieve.seed = 22")
        for prepare in (False, True):
            conn.execute("select sieve.clear_cache('digit_oracle')")
            rows = conn.execute(sql, (1000, 0.9, 0.99, 300), prepare=prepare).fetchall()
            assert _ids(rows) == expected
            mode, target, confidence, calls = _logged(conn)
            assert (mode, target, confidence) == ("recall", 0.9, 0.99)
            assert 0 < calls["digit_oracle"] <= 300
        conn.execute("select sieve.clear_cache('digit_oracle')")
        # numeric and text values (psycopg sends both as text): a fraction, a percentage
        conn.execute(sql, (1000, Decimal("0.9"), "99%", 40))
        assert _logged(conn)[1:3] == (0.9, 0.99) and _logged(conn)[3]["digit_oracle"] <= 40


@pytest.mark.parametrize(
    ("values", "words", "hint"),
    [
        (
            (1000, 90, 0.95, 300),
            "RECALL TARGET $2 must be between 0% and 100% (exclusive), got 90",
            "0.9 for 90%",
        ),
        ((1000, 0.9, 0.3, 300), "CONFIDENCE $3 must be above 50% and below 100%, got 0.3", None),
        ((1000, 0.9, 0.95, 0), "BUDGET $4 must be at least 1 oracle call, got 0", None),
        ((1000, 0.9, 0.95, 2.5), "BUDGET $4 must be a whole number of oracle calls, got 2.5", None),
        ((1000, None, 0.95, 300), "RECALL TARGET $2 cannot be NULL", None),
    ],
)
def test_bad_bound_clause_values_are_22023_naming_the_parameter(approx_world, values, words, hint):
    sql = f"SELECT id {WHERE} AND id < %s RECALL TARGET %s CONFIDENCE %s BUDGET %s {PROXY}"
    with approx_world.connect() as conn:
        for prepare in (False, True):
            with pytest.raises(psycopg.Error) as caught:
                conn.execute(sql, values, prepare=prepare)
            assert caught.value.sqlstate == "22023"
            assert caught.value.diag.message_primary == words
            if hint is not None:
                assert hint in caught.value.diag.message_hint
            assert conn.execute("select 1").fetchone() == (1,)


def test_asyncpg_bad_budget_parameter_fails_and_the_session_goes_on(approx_world):
    async def scenario():
        conn = await asyncpg.connect(approx_world.server.dsn())
        try:
            with pytest.raises(asyncpg.PostgresError) as caught:
                await conn.fetch(BOUND, -5, 0.9, 1000, 0.95)
            assert caught.value.sqlstate == "22023"
            assert "BUDGET $1 must be at least 1 oracle call" in caught.value.message
            assert await conn.fetchval("select 5") == 5
        finally:
            await conn.close()

    _run(scenario())


# --- clause words misspelt, or in the wrong place -------------------------------------------


@pytest.mark.parametrize(
    ("sql", "sqlstate", "words"),
    [
        (
            f"SELECT id {WHERE} RECAL TARGET 90% {PROXY}",
            "42601",
            '"RECAL TARGET" (did you mean RECALL TARGET?)',
        ),
        (f"SELECT count(*) {WHERE} ERORR TARGET 5%", "42601", "(did you mean ERROR TARGET?)"),
        (f"SELECT id {WHERE} PRECISSION TARGET 90%", "42601", "(did you mean PRECISION TARGET?)"),
        (
            f"SELECT id {WHERE} RECALL TARGET 90% CONFIDENSE 95%",
            "42601",
            '"CONFIDENSE" (did you mean CONFIDENCE?)',
        ),
        (f"SELECT id {WHERE} RECALL TARGET 90% BUGDET 100", "42601", '"BUGDET" (did you mean BUDGET?)'),
        (
            f"SELECT id {WHERE} LIMIT 5 USING PROXI digit_proxy_p7(pixels)",
            "42601",
            "(did you mean USING PROXY?)",
        ),
        (
            f"WITH t AS (SELECT id, score {WHERE} ERROR TARGET 5%) SELECT count(*) FROM t",
            "0A000",
            '"ERROR TARGET 5%" is inside the WITH query t',
        ),
        (
            f"SELECT * FROM (SELECT id {WHERE} RECALL TARGET 90% {PROXY}) s",
            "0A000",
            "applies to the outermost SELECT only",
        ),
    ],
)
def test_misspelt_or_misplaced_clauses_are_errors_on_both_protocols(approx_world, sql, sqlstate, words):
    with approx_world.connect() as conn:
        for prepare in (False, True):  # no parameters: the simple protocol, or Parse/Bind/Execute
            with pytest.raises(psycopg.Error) as caught:
                conn.execute(sql, prepare=prepare)
            assert caught.value.sqlstate == sqlstate, caught.value
            assert words in caught.value.diag.message_primary
            if sqlstate == "0A000":
                assert "move it to the end" in caught.value.diag.message_hint
            assert conn.execute("select 1").fetchone() == (1,)


def test_valid_sql_with_clause_like_words_runs_exactly(approx_world):
    sql = (
        "SELECT error.id AS target, error.label AS budget FROM digits error "
        "WHERE error.id < 40 AND digit_oracle(error.pixels) = error.label ORDER BY target LIMIT 5"
    )
    with approx_world.connect() as conn:
        exact = conn.execute(sql.replace("digit_oracle(error.pixels)", "error.label")).fetchall()
        assert conn.execute(sql).fetchall() == exact
        assert conn.execute(sql.replace("< 40", "< %s"), (40,)).fetchall() == exact
        assert len(exact) == 5
