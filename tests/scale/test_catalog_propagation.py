"""Catalog changes made through one front-end reach the other over the same Postgres."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.support.model_files import direct_run

PROPAGATION_DEADLINE_S = 10.0  # generous on a loaded machine; the measured figure is printed


def _connect(frontends, which: int) -> psycopg.Connection:
    return psycopg.connect(frontends.dsn(which), autocommit=True)


def _until(check, what: str) -> float:
    """Run ``check`` until it stops raising (or the deadline); the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            check()
            took = time.monotonic() - started
            print(f"{what}: {took * 1000:.0f} ms")
            return took
        except (psycopg.Error, AssertionError):
            if time.monotonic() - started > PROPAGATION_DEADLINE_S:
                raise


def _listeners(conn: psycopg.Connection) -> list[int]:
    """The catalog listeners' backends on the front-ends' database."""
    rows = conn.execute(
        "select pid from pg_stat_activity where application_name = 'sievedb catalog listener' "
        "and datname = 'postgres'"
    ).fetchall()
    return [r[0] for r in rows]


def test_a_model_created_through_one_frontend_runs_through_the_other(frontends, scale_models):
    expected = direct_run(scale_models / "digits_mlp.onnx", {"X": _pixels(frontends, 20)})["label"]
    with _connect(frontends, 0) as a, _connect(frontends, 1) as b:
        b.execute("select 1")  # B's planner is up and has read the catalog before the model exists
        a.execute(
            "create function prop_digit(pixels real[]) returns int language onnx "
            """as 'digits_mlp.onnx', '{"output": "label"}'"""
        )
        query = "select prop_digit(pixels) from digits where id < 20 order by id"

        def b_runs_it() -> None:
            assert [r[0] for r in b.execute(query).fetchall()] == expected.tolist()

        _until(b_runs_it, "model created through A, run through B")
        calls = b.execute(
            "select model_calls->>'prop_digit' from sieve.query_log where query = %s "
            "order by query_id desc limit 1",
            (query,),
        ).fetchone()
        assert calls == ("20",)  # B planned it (ran the model), not Postgres's read of an empty cache


def test_a_view_created_through_one_frontend_is_planned_by_the_other(frontends):
    with _connect(frontends, 0) as a, _connect(frontends, 1) as b:
        a.execute(
            "create function view_digit(pixels real[]) returns int language onnx "
            """as 'digits_mlp.onnx', '{"output": "label"}'"""
        )
        a.execute("create view view_digits as select id, view_digit(pixels) as digit from digits")
        truth = a.execute("select count(*) from view_digits where id < 300 and digit = 3").fetchone()
        b.execute("select sieve.clear_cache('view_digit')")  # B must run the model itself

        def b_plans_the_view() -> None:
            assert (
                b.execute("select count(*) from view_digits where id < 300 and digit = 3").fetchone() == truth
            )

        _until(b_plans_the_view, "view created through A, planned by B")
        assert truth[0] > 0


def test_an_assertion_created_through_one_frontend_is_checked_through_the_other(frontends):
    with _connect(frontends, 0) as a, _connect(frontends, 1) as b:
        a.execute(
            "create function assert_digit(pixels real[]) returns int language onnx "
            """as 'digits_mlp.onnx', '{"output": "label"}'"""
        )
        a.execute("create view assert_digits as select id, label, assert_digit(pixels) as digit from digits")
        a.execute(
            "create assertion wrong_digit as select id, 1.0 as severity from assert_digits "
            "where id < 200 and digit <> label"
        )
        wrong = a.execute(
            "select count(*) from digits where id < 200 and assert_digit(pixels) <> label"
        ).fetchone()[0]

        def b_checks_it() -> None:
            assert b.execute("select sieve.check_assertion('wrong_digit')").fetchone()[0] == wrong

        _until(b_checks_it, "assertion created through A, checked through B")
        b.execute("drop assertion wrong_digit")
        with pytest.raises(psycopg.Error):
            a.execute("select sieve.check_assertion('wrong_digit')")


def test_a_drop_through_one_frontend_reaches_the_other(frontends):
    with _connect(frontends, 0) as a, _connect(frontends, 1) as b:
        a.execute(
            "create function drop_digit(pixels real[]) returns int language onnx "
            """as 'digits_mlp.onnx', '{"output": "label"}'"""
        )
        _until(lambda: b.execute("select drop_digit(pixels) from digits where id = 1").fetchone(), "create")
        a.execute("drop function drop_digit")

        def b_forgot_it() -> None:
            with pytest.raises(psycopg.errors.UndefinedFunction):
                b.execute("select drop_digit(pixels) from digits where id = 1")
            assert b.execute("select count(*) from sieve.models where name = 'drop_digit'").fetchone() == (0,)

        _until(b_forgot_it, "model dropped through A, gone on B")
        # and the name is free again through B
        b.execute(
            "create function drop_digit(pixels real[]) returns int language onnx "
            """as 'digits_mlp.onnx', '{"output": "label"}'"""
        )
        _until(lambda: a.execute("select drop_digit(pixels) from digits where id = 1").fetchone(), "again")


def test_a_killed_listener_reconnects_and_later_changes_still_propagate(frontends, scale_models):
    with psycopg.connect(frontends.backing_dsn(), autocommit=True) as pg, _connect(frontends, 0) as a:
        _connect(frontends, 1).close()  # B's planner is up
        before = _listeners(pg)
        assert len(before) == 2  # one per front-end for this database
        pg.execute("select pg_terminate_backend(pid) from unnest(%s::int[]) as pid", (before,))

        def relistening() -> None:
            now = _listeners(pg)
            assert len(now) == 2 and not set(now) & set(before)

        _until(relistening, "listeners reconnected")
        a.execute(
            "create function late_digit(pixels real[]) returns int language onnx "
            """as 'digits_mlp.onnx', '{"output": "label"}'"""
        )
    expected = direct_run(scale_models / "digits_mlp.onnx", {"X": _pixels(frontends, 5)})["label"].tolist()
    with _connect(frontends, 1) as b:

        def b_runs_it() -> None:
            got = b.execute("select late_digit(pixels) from digits where id < 5 order by id").fetchall()
            assert [r[0] for r in got] == expected

        _until(b_runs_it, "model created after the listener was killed, run through B")


def _pixels(frontends, rows: int):
    import numpy as np

    with _connect(frontends, 0) as conn:
        got = conn.execute("select pixels from digits where id < %s order by id", (rows,)).fetchall()
    return np.asarray([r[0] for r in got], dtype=np.float32)


def test_a_role_that_is_no_superuser_creates_through_one_and_reads_through_the_other(frontends):
    password = "alice-pw-1"
    with psycopg.connect(frontends.backing_dsn(), autocommit=True) as pg:
        pg.execute(f"create role prop_alice login password '{password}'")
        pg.execute("grant sieve_model_admin to prop_alice")
        pg.execute("grant create on schema public to prop_alice")
        pg.execute("grant select on digits to prop_alice")
    a = psycopg.connect(frontends.dsn(0, user="prop_alice", password=password), autocommit=True)
    b = psycopg.connect(frontends.dsn(1, user="prop_alice", password=password), autocommit=True)
    with a, b:
        a.execute(
            "create function alice_digit(pixels real[]) returns int language onnx "
            """as 'digits_mlp.onnx', '{"output": "label"}'"""
        )
        a.execute("create view alice_digits as select id, alice_digit(pixels) as digit from digits")
        truth = a.execute("select count(*) from alice_digits where id < 100 and digit = 1").fetchone()
        b.execute("select sieve.clear_cache('alice_digit')")  # the owner may; B runs the model itself

        def b_plans_it() -> None:
            assert (
                b.execute("select count(*) from alice_digits where id < 100 and digit = 1").fetchone()
                == truth
            )

        _until(b_plans_it, "non-superuser's view, through B")


def test_without_the_event_trigger_the_forwarding_frontend_tells_the_others(frontends):
    """Under a backing role that may not create event triggers, the front-end that forwarded
    the view's DDL sends the notification."""
    with psycopg.connect(frontends.backing_dsn(), autocommit=True) as pg:
        pg.execute("drop event trigger sieve_catalog_ddl")
        try:
            with _connect(frontends, 0) as a, _connect(frontends, 1) as b:
                a.execute(
                    "create function plain_digit(pixels real[]) returns int language onnx "
                    """as 'digits_mlp.onnx', '{"output": "label"}'"""
                )
                _until(
                    lambda: b.execute("select plain_digit(pixels) from digits where id = 0").fetchone(), "fn"
                )
                a.execute("create view plain_digits as select id, plain_digit(pixels) as digit from digits")
                truth = a.execute("select count(*) from plain_digits where id < 50 and digit = 2").fetchone()
                b.execute("select sieve.clear_cache('plain_digit')")

                def b_plans_it() -> None:
                    assert (
                        b.execute("select count(*) from plain_digits where id < 50 and digit = 2").fetchone()
                        == truth
                    )

                _until(b_plans_it, "view without the event trigger, through B")
        finally:
            pg.execute(
                "create event trigger sieve_catalog_ddl on ddl_command_end when tag in "
                "('CREATE VIEW', 'ALTER VIEW', 'DROP VIEW', 'ALTER TABLE', 'DROP TABLE', 'DROP SCHEMA', "
                "'ALTER SCHEMA', 'DROP FUNCTION', 'ALTER FUNCTION') execute function sieve.notify_ddl()"
            )


def test_a_change_made_while_the_listeners_were_down_is_loaded_when_they_reconnect(frontends, scale_models):
    """NOTIFY is not queued for a listener that is gone: the reload after reconnecting must
    catch what was missed."""
    expected = direct_run(scale_models / "digits_mlp.onnx", {"X": _pixels(frontends, 5)})["label"].tolist()
    other_database = frontends.backing_dsn().rsplit("/", 1)[0] + "/template1"  # may lock out postgres
    with (
        psycopg.connect(other_database, autocommit=True) as pg,
        _connect(frontends, 0) as a,
        _connect(frontends, 1) as b,
    ):
        before = _listeners(pg)
        pg.execute(
            "alter database postgres allow_connections false"
        )  # no one reconnects, superusers included
        try:
            pg.execute("select pg_terminate_backend(pid) from unnest(%s::int[]) as pid", (before,))
            _until(lambda: _no_listeners(pg), "listeners gone")
            a.execute(
                "create function missed_digit(pixels real[]) returns int language onnx "
                """as 'digits_mlp.onnx', '{"output": "label"}'"""
            )  # its NOTIFY reaches no one
            with pytest.raises(psycopg.Error):
                b.execute("select missed_digit(pixels) from digits where id < 5 order by id")
        finally:
            pg.execute("alter database postgres allow_connections true")

        def b_runs_it() -> None:
            got = b.execute("select missed_digit(pixels) from digits where id < 5 order by id").fetchall()
            assert [r[0] for r in got] == expected

        _until(b_runs_it, "model created while nobody listened, run through B after the reconnect")


def _no_listeners(pg: psycopg.Connection) -> None:
    assert _listeners(pg) == []
