"""``sieve.*`` settings: a misspelt name is refused as Postgres refuses an unknown parameter
(42704, with the nearest valid name), and every valid one SHOWs a default before any SET."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from planner.approx.settings import SHOWN_DEFAULTS, parse_settings
from planner.setting_names import DEFAULTS, review

TYPO = "sieve.recal_target"
HINT = 'did you mean "sieve.recall_target"?'


def _refused(error: psycopg.Error, name: str = TYPO) -> None:
    assert error.sqlstate == "42704"
    assert error.diag.message_primary == f'unrecognized configuration parameter "{name}"'


def _show(conn: psycopg.Connection, name: str) -> str:
    return conn.execute(f"show {name}").fetchone()[0]


@pytest.mark.parametrize(
    "statement",
    [
        f"set {TYPO} = 0.9",
        f"set session {TYPO} = 0.9",
        f"set {TYPO} to default",
        f"reset {TYPO}",
        f"show {TYPO}",
        f"select pg_catalog.set_config('{TYPO}', '0.9', false)",
    ],
)
def test_a_misspelt_setting_is_refused_with_the_nearest_name_and_the_session_goes_on(sieve_server, statement):
    with psycopg.connect(sieve_server.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(statement)
        _refused(caught.value)
        assert caught.value.diag.message_hint == HINT
        assert conn.execute("select 1").fetchone() == (1,)
        assert _show(conn, TYPO.replace("recal", "recall")) == ""  # nothing was set


def test_a_name_far_from_every_setting_gets_the_list_of_settings(sieve_server):
    with psycopg.connect(sieve_server.dsn(), autocommit=True) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute("set sieve.frobnicate = 1")
    _refused(caught.value, "sieve.frobnicate")
    assert "sieve.recall_target" in caught.value.diag.message_hint


def test_every_setting_shows_its_default_before_any_set(sieve_server):
    with psycopg.connect(sieve_server.dsn(), autocommit=True) as conn:
        shown = {name: _show(conn, name) for name in DEFAULTS}
    assert shown == DEFAULTS
    assert shown["sieve.confidence"] == "0.95" and shown["sieve.bound"] == "empirical"


def test_set_then_show_then_reset(sieve_server):
    with psycopg.connect(sieve_server.dsn(), autocommit=True) as conn:
        conn.execute("set sieve.budget = 500")
        conn.execute("set sieve.recall_target = '90%'")
        assert (_show(conn, "sieve.budget"), _show(conn, "sieve.recall_target")) == ("500", "90%")
        conn.execute("reset sieve.budget")
        assert _show(conn, "sieve.budget") == ""
        conn.execute("reset all")
        assert _show(conn, "sieve.recall_target") == ""


def test_set_local_lasts_until_the_end_of_its_transaction(sieve_server):
    with psycopg.connect(sieve_server.dsn()) as conn:
        conn.execute("set local sieve.seed = 42")
        assert _show(conn, "sieve.seed") == "42"
        conn.commit()
        assert _show(conn, "sieve.seed") == ""


def test_a_refused_setting_aborts_the_transaction_block_like_postgres(sieve_server):
    with psycopg.connect(sieve_server.dsn()) as conn:
        conn.execute("set local sieve.budget = 10")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(f"set local {TYPO} = 0.9")
        _refused(caught.value)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        assert _show(conn, "sieve.budget") == ""
        assert conn.execute("select 1").fetchone() == (1,)


def test_statements_before_a_refused_one_run_and_the_ones_after_do_not(sieve_server):
    with psycopg.connect(sieve_server.dsn(), autocommit=True) as conn:
        conn.execute("create temp table marks (n int)")
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(f"insert into marks values (1); set {TYPO} = 0.9; insert into marks values (2)")
        _refused(caught.value)
        # one implicit transaction, as in Postgres: the first insert is rolled back with it
        assert conn.execute("select count(*) from marks").fetchone() == (0,)
        conn.execute("insert into marks values (3); show sieve.budget; insert into marks values (4)")
        assert conn.execute("select n from marks order by n").fetchall() == [(3,), (4,)]


def test_the_clients_own_startup_options_still_set_sieve_settings(sieve_server):
    with psycopg.connect(sieve_server.dsn(), autocommit=True, options="-c sieve.budget=7") as conn:
        assert _show(conn, "sieve.budget") == "7"
        assert _show(conn, "sieve.proxy") == ""


def test_the_extended_protocol_refuses_and_shows_alike(sieve_server):
    async def run() -> None:
        conn = await asyncpg.connect(sieve_server.dsn())
        try:
            assert await conn.fetchval("show sieve.confidence") == "0.95"
            assert await conn.fetchval("show sieve.strict") == "off"
            await conn.execute("set sieve.strict = on")
            assert await conn.fetchval("show sieve.strict") == "on"
            for statement in (f"show {TYPO}", f"set {TYPO} = 0.9", f"reset {TYPO}"):
                with pytest.raises(asyncpg.UndefinedObjectError) as caught:
                    await (await conn.prepare(statement)).fetch()
                assert caught.value.message == f'unrecognized configuration parameter "{TYPO}"'
                assert caught.value.hint == HINT
            async with conn.transaction():
                await conn.fetchval("select pg_catalog.set_config('sieve.seed', $1, true)", "5")
                assert await conn.fetchval("show sieve.seed") == "5"
            assert await conn.fetchval("select $1::int + 1", 1) == 2
        finally:
            await conn.close()

    asyncio.run(run())


def test_the_shown_defaults_mean_no_settings_at_all():
    settings = parse_settings(list(SHOWN_DEFAULTS.values()))
    assert settings.clause_for(aggregate=False) is None and settings.clause_for(aggregate=True) is None
    assert not settings.strict and not settings.bounds and settings.budget is None


@pytest.mark.parametrize(
    "statement",
    [
        "select * from sieve.models",
        "set sieve.recall_target = 0.9",
        "alter role alice reset sieve.recal_target",  # clears what an older SieveDB let through
        "select pg_catalog.set_config('sieve.seeed', $1, false)",  # its parameter count must stay
        "set sieve.budget =",  # Postgres reports the syntax error
    ],
)
def test_statements_forwarded_as_they_are(statement):
    assert review(statement) is None
