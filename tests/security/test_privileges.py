"""Least privilege: a non-superuser replays the attacks that used to run as the superuser.

Every statement the planner derives from a client's SQL runs in that client's own session, so
Postgres answers with the client's privileges: 42501 and nothing leaked.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest

from tests.inference.models import digits_mlp, load_digits_data
from tests.support.servers import SieveProcess

SECRET = "the-secret-is-4711"
ROWS = 120


@dataclass
class World:
    server: SieveProcess
    models_dir: Path
    expected: dict[int, int]  # id -> the model's label, from onnxruntime directly

    def connect(self, user: str = "postgres", database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(user=user, database=database), autocommit=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    import onnxruntime as ort

    models_dir = tmp_path_factory.mktemp("priv-models")
    digits = load_digits_data()
    _, mlp = digits_mlp(digits, models_dir)
    session = ort.InferenceSession(str(mlp), providers=["CPUExecutionProvider"])
    labels = session.run(["label"], {session.get_inputs()[0].name: digits.x[:ROWS].astype(np.float32)})[0]
    server = SieveProcess(
        data_dir=tmp_path_factory.mktemp("priv-server") / "data",
        extra_args=["--models-dir", str(models_dir), "--inference-workers", "1"],
    ).start()
    world = World(server, models_dir, {i: int(v) for i, v in enumerate(labels)})
    with world.connect() as conn:
        conn.execute("create table digits (id int primary key, pixels real[])")
        with conn.cursor().copy("copy digits (id, pixels) from stdin") as copy:
            for i in range(ROWS):
                copy.write_row((i, digits.x[i].tolist()))
        conn.execute("create table secret (s text)")
        conn.execute("insert into secret values (%s)", (SECRET,))
        for role in ("alice", "bob", "carol"):
            conn.execute(f"create role {role} login")
        conn.execute("grant select on digits to bob, carol")
        conn.execute("grant sieve_model_admin to carol")
        conn.execute("grant create on schema public to carol")
        conn.execute("create schema bobs authorization bob")
        conn.execute(
            "create function p_label(pixels real[]) returns int language onnx "
            "as 'digits_mlp.onnx', '{\"output\": \"label\"}'"
        )
    yield world
    server.stop()


def _fails(conn: psycopg.Connection, sql: str, sqlstate: str = "42501") -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql)
    assert caught.value.sqlstate == sqlstate, (caught.value.sqlstate, str(caught.value))
    assert SECRET not in str(caught.value)
    return caught.value


ATTACKS = [
    "select id from digits where p_label(pixels) = 3 and (select s from secret)::int = 0",
    "select id from digits where p_label(pixels) = 3 and pg_read_file('/etc/hostname') is not null",
    "select id from digits where p_label(pixels) = 3 and (select count(*) from pg_authid) > 0",
    "select id from digits where p_label(pixels) = 3 "
    "and lo_export(lo_from_bytea(0, 'x'), '/tmp/sieve-pwn') > 0",
    "select id from digits where p_label(pixels) = 3 and (select s from secret) is not null limit 3",
    "explain select id from digits where p_label(pixels) = 3 and (select s from secret)::int = 0",
    "explain analyze select id from digits where p_label(pixels) = 3 and (select s from secret) <> ''",
    "select p_label(d.pixels) from digits d join secret s on s.s::int = d.id",
    "select id from digits where p_label(pixels) = 3 recall target 90% budget 50 "
    "using proxy (select length(s) from secret)::float8 / 100",
    "select count(*) from digits where p_label(pixels) = 3 and (select s from secret)::int > 0 "
    "error target 20% budget 50",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_role_without_grants_cannot_read_through_the_planner(world: World, attack: str) -> None:
    with world.connect("bob") as conn:
        _fails(conn, attack)
        assert conn.execute("select 1").fetchone() == (1,)  # the session goes on
    assert not Path("/tmp/sieve-pwn").exists()


def test_a_role_without_select_on_the_table_gets_permission_denied(world: World) -> None:
    with world.connect("alice") as conn:
        error = _fails(conn, "select id from digits where p_label(pixels) = 3")
        assert "digits" in str(error)


def test_a_granted_role_gets_the_models_answers(world: World) -> None:
    with world.connect("bob") as conn:
        rows = conn.execute("select id, p_label(pixels) from digits where id < 40 order by id").fetchall()
    assert rows == [(i, world.expected[i]) for i in range(40)]


def test_row_level_security_limits_what_the_model_sees(world: World) -> None:
    with world.connect() as conn:
        conn.execute("create table rls_digits as select * from digits")
        conn.execute("alter table rls_digits enable row level security")
        conn.execute("create policy few on rls_digits for select to bob using (id % 10 = 0)")
        conn.execute("grant select on rls_digits to bob")
    with world.connect("bob") as conn:
        rows = conn.execute("select id, p_label(pixels) from rls_digits order by id").fetchall()
        logged = conn.execute(
            "select model_calls, cache_hits from sieve.query_log where query like '%rls_digits%' "
            "order by query_id desc limit 1"
        ).fetchone()
    assert rows == [(i, world.expected[i]) for i in range(0, ROWS, 10)]
    runs = logged[0].get("p_label", 0)
    assert runs + logged[1] <= ROWS // 10  # only the rows bob may see reached the model


def test_execute_privilege_follows_grant_and_revoke(world: World) -> None:
    with world.connect() as conn:
        conn.execute(
            "create function p_gated(pixels real[]) returns int language onnx as "
            "'digits_mlp.onnx', '{\"output\": \"label\"}'"
        )
        conn.execute("revoke execute on function p_gated(real[]) from public")
    with world.connect("bob") as conn:
        _fails(conn, "select id from digits where p_gated(pixels) = 1")
        cache = conn.execute(
            "select 'sieve_cache.' || quote_ident(c.relname) from pg_class c join sieve.models m "
            "on c.relname = 'm' || m.id || '_v' || m.version where m.name = 'p_gated'"
        ).fetchone()[0]
    with world.connect() as conn:
        conn.execute("select count(*) from digits where p_gated(pixels) = 1")  # fills the cache
    with world.connect("bob") as conn:
        assert conn.execute(f"select count(*) from {cache}").fetchone() == (0,)  # hidden by RLS
    with world.connect() as conn:
        conn.execute("grant execute on function p_gated(real[]) to bob")
    with world.connect("bob") as conn:
        count = conn.execute("select count(*) from digits where p_gated(pixels) = 1").fetchone()[0]
        assert count == sum(1 for v in world.expected.values() if v == 1)
        assert conn.execute(f"select count(*) from {cache}").fetchone()[0] > 0


@pytest.mark.parametrize("path", ["digits_mlp.onnx", "/etc/passwd", "../../etc/shadow", "missing.onnx"])
def test_only_model_admins_register_models_and_files_are_not_probed(world: World, path: str) -> None:
    with world.connect("bob") as conn:
        error = _fails(conn, f"create function m_bob(pixels real[]) returns int language onnx as '{path}'")
        assert path not in str(error)


def test_a_model_admin_registers_owns_and_clears_a_model(world: World) -> None:
    with world.connect("carol") as conn:
        conn.execute(
            "create function carols(pixels real[]) returns int language onnx "
            "as 'digits_mlp.onnx', '{\"output\": \"label\"}'"
        )
        owner = conn.execute(
            "select proowner::regrole::text from pg_proc where proname = 'carols'"
        ).fetchone()
        assert owner == ("carol",)
        rows = conn.execute("select id, carols(pixels) from digits where id < 5 order by id").fetchall()
        assert rows == [(i, world.expected[i]) for i in range(5)]
    with world.connect("bob") as conn:
        _fails(conn, "select sieve.clear_cache('carols')")
        _fails(conn, "drop function carols(real[])")
    with world.connect("carol") as conn:
        assert conn.execute("select sieve.clear_cache('carols')").fetchone()[0] == 5
        conn.execute("drop function carols(real[])")


def test_model_ddl_inside_a_transaction_block_is_refused(world: World) -> None:
    with world.connect() as conn, conn.transaction():
        _fails(
            conn,
            "create function in_tx(pixels real[]) returns int language onnx as 'digits_mlp.onnx', "
            '\'{"output": "label"}\'',
            "25001",
        )


def test_each_role_sees_its_own_query_log(world: World) -> None:
    with world.connect("bob") as conn:
        conn.execute("select count(*) from digits where p_label(pixels) = 5")
        roles = {r[0] for r in conn.execute("select role from sieve.query_log").fetchall()}
    assert roles == {"bob"}
    with world.connect() as conn:
        everyone = {r[0] for r in conn.execute("select role from sieve.query_log").fetchall()}
    assert {"bob", "postgres"} <= everyone


def test_a_session_that_shadows_the_digest_cannot_poison_the_cache(world: World) -> None:
    """Bob's sha256 says every input is row 0's: were the digest his session computes trusted,
    row 7's output would be cached as row 0's for everyone."""
    other = next(i for i in range(1, ROWS) if world.expected[i] != world.expected[0])
    with world.connect() as conn:
        conn.execute(
            "create function p_shadowed(pixels real[]) returns int language onnx as "
            "'digits_mlp.onnx', '{\"output\": \"label\"}'"
        )
    with world.connect("bob") as conn:
        conn.execute(
            "create function bobs.sha256(bytea) returns bytea language sql as $$ select "
            "pg_catalog.sha256(pg_catalog.array_send(pixels)) from public.digits where id = 0 $$"
        )
        conn.execute("set search_path = bobs, public, pg_catalog")
        with contextlib.suppress(psycopg.Error):  # fooling itself may fail its own statement
            conn.execute(f"select p_shadowed(pixels) from digits where id = {other}")
    with world.connect() as conn:
        rows = conn.execute("select id, p_shadowed(pixels) from digits order by id").fetchall()
    assert rows == sorted(world.expected.items())


def test_models_work_in_every_database_of_the_cluster(world: World) -> None:
    with world.connect() as conn:
        conn.execute("create database other")
    with world.connect(database="other") as conn:
        conn.execute("create table digits (id int primary key, pixels real[])")
        with world.connect() as main:
            rows = main.execute("select id, pixels from digits where id >= 100 order by id").fetchall()
        with conn.cursor().copy("copy digits (id, pixels) from stdin") as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(
            "create function p_other(pixels real[]) returns int language onnx "
            "as 'digits_mlp.onnx', '{\"output\": \"label\"}'"
        )
        got = conn.execute("select id, p_other(pixels) from digits order by id").fetchall()
        assert conn.execute("select count(*) from sieve.models").fetchone() == (1,)
    assert got == [(i, world.expected[i]) for i in range(100, ROWS)]
    with world.connect() as conn:  # the main database knows nothing of it
        assert conn.execute("select count(*) from sieve.models where name = 'p_other'").fetchone() == (0,)


def test_approximate_queries_over_a_table_named_by_a_reserved_word(world: World) -> None:
    with world.connect() as conn:
        conn.execute('create table "user" as select * from digits')
        conn.execute("set sieve.seed = 1")
        rows = conn.execute(
            'select id from "user" where p_label(pixels) = 3 recall target 90% budget 500'
        ).fetchall()
    # a budget above the candidate count labels every row: the exact answer
    assert sorted(r[0] for r in rows) == sorted(i for i, v in world.expected.items() if v == 3)


def test_a_role_granted_a_model_view_alone_reads_it_as_postgres_would(world: World) -> None:
    """Postgres reads a view's tables as the view's owner: SELECT on the view (and EXECUTE on
    its model) is enough. The view is read whole, its model run as the owner reads it; the
    client's own conditions never run with the owner's privileges."""
    with world.connect() as conn:
        conn.execute(
            "create function p_view_label(pixels real[]) returns int language onnx "
            "as 'digits_mlp.onnx', '{\"output\": \"label\"}'"
        )
        conn.execute("create view labelled as select d.id, p_view_label(d.pixels) as digit from digits d")
        conn.execute("grant select on labelled to alice")
        conn.execute("grant execute on function p_view_label(real[]) to alice")
        conn.execute("create view labelled_invoker with (security_invoker = true) as select * from labelled")
        conn.execute("grant select on labelled_invoker to alice")
    want = sorted(i for i, label in world.expected.items() if label == 3)
    with world.connect("alice") as conn:
        _fails(conn, "select id from digits where p_label(pixels) = 3")  # still no table access
        rows = conn.execute("select id from labelled where digit = 3 order by id").fetchall()
        assert [r[0] for r in rows] == want
        limited = conn.execute("select id, digit from labelled where digit = 3 limit 2").fetchall()
        assert len(limited) == 2 and all(digit == 3 and i in want for i, digit in limited)
        explained = "\n".join(r[0] for r in conn.execute("explain analyze select count(*) from labelled"))
        assert "Execution Time" in explained
        # a pushed-down condition of the client's would run as the owner: it must not
        _fails(conn, "select id from labelled where digit = 3 and (select s from secret) is not null")
        # security_invoker: Postgres checks the client's own privileges on the tables
        _fails(conn, "select id from labelled_invoker where digit = 3")


def test_a_view_read_whole_runs_only_the_model_columns_the_statement_reads(world: World) -> None:
    with world.connect() as conn:
        for name in ("p_whole_a", "p_whole_b"):
            conn.execute(
                f"create function {name}(pixels real[]) returns int language onnx "
                "as 'digits_mlp.onnx', '{\"output\": \"label\"}'"
            )
            conn.execute(f"grant execute on function {name}(real[]) to alice")
        conn.execute(
            "create view two_labels as select d.id, p_whole_a(d.pixels) as a, p_whole_b(d.pixels) as b "
            "from digits d"
        )
        conn.execute("grant select on two_labels to alice")
    with world.connect("alice") as conn:
        rows = conn.execute("select id from two_labels where a = 3 order by id").fetchall()
        calls = conn.execute(
            "select model_calls from sieve.query_log where query like '%two_labels%' "
            "order by query_id desc limit 1"
        ).fetchone()[0]
        counted = conn.execute("select count(*) from two_labels").fetchone()[0]
        none_read = conn.execute(
            "select model_calls from sieve.query_log where query like '%count(*) from two_labels%' "
            "order by query_id desc limit 1"
        ).fetchone()
    assert [r[0] for r in rows] == sorted(i for i, label in world.expected.items() if label == 3)
    assert calls.get("p_whole_a") == ROWS and calls.get("p_whole_b", 0) == 0, calls
    assert counted == ROWS
    assert none_read is None or not any(none_read[0].values()), none_read
