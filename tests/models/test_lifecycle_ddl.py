"""Model lifecycle like Postgres: DROP … CASCADE / RESTRICT / IF EXISTS, ALTER FUNCTION … RENAME
TO / OWNER TO / SET SCHEMA, COMMENT ON, CREATE OR REPLACE, and transaction blocks.

Each test checks the SQLSTATE, then what ``sieve.models``, ``pg_proc`` and the cache tables say
afterwards, and that the session goes on."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from tests.models.conftest import label_function, label_view
from tests.support.model_files import cache_table, direct_run
from tests.support.servers import PlainPostgres, SieveProcess

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _fails(conn: psycopg.Connection, sql: str, sqlstate: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql)
    assert caught.value.sqlstate == sqlstate, (caught.value.sqlstate, str(caught.value))
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        conn.execute("rollback")
    assert conn.execute("select 1").fetchone() == (1,)  # the session goes on
    return caught.value


def _model_row(conn: psycopg.Connection, name: str) -> tuple | None:
    return conn.execute("select id, version from sieve.models where name = %s", (name,)).fetchone()


def _function(conn: psycopg.Connection, name: str, args: str = "real[]") -> str | None:
    """The function's regprocedure in schema public, or None."""
    return conn.execute("select to_regprocedure(%s)::text", (f'public."{name}"({args})',)).fetchone()[0]


def _tables(conn: psycopg.Connection, model_id: int) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'sieve_cache' and relname ~ %s order by 1",
            (f"^m{model_id}_v[0-9]+$",),
        ).fetchall()
    ]


def _labels(world, conn: psycopg.Connection, function: str, rows: int = 20) -> list[int]:
    got = conn.execute(f"select {function}(pixels) from digits where id < {rows} order by id").fetchall()
    expected = direct_run(world.mlp_path, {"X": world.digits.x[:rows]})["label"].tolist()
    assert [r[0] for r in got] == expected
    return expected


# -- DROP ----------------------------------------------------------------------------------------


def test_drop_restrict_refuses_with_dependent_views_and_cascade_drops_them(world):
    with world.connect() as conn:
        label_function(conn, "lc_casc")
        label_view(conn, "lc_casc_v", "lc_casc")
        _labels(world, conn, "lc_casc")
        model_id, _ = _model_row(conn, "lc_casc")
        _fails(conn, "drop function lc_casc(real[])", "2BP01")
        _fails(conn, "drop function lc_casc(real[]) restrict", "2BP01")
        assert _model_row(conn, "lc_casc") is not None and _function(conn, "lc_casc")
        assert _tables(conn, model_id) == [f"m{model_id}_v1"]
        conn.execute("drop function lc_casc(real[]) cascade")
        assert _model_row(conn, "lc_casc") is None and _function(conn, "lc_casc") is None
        assert _tables(conn, model_id) == []
        assert conn.execute("select to_regclass('lc_casc_v')").fetchone() == (None,)
        _fails(conn, "select digit from lc_casc_v where id < 3", "42P01")
        label_function(conn, "lc_casc")  # the name is free again: a new model, version 1
        assert _model_row(conn, "lc_casc")[1] == 1
        _labels(world, conn, "lc_casc", rows=5)
        conn.execute("drop function lc_casc")


def test_drop_if_exists_of_several_names_drops_models_and_plain_functions_together(world):
    with world.connect() as conn:
        label_function(conn, "lc_multi_a")
        label_function(conn, "lc_multi_b")
        conn.execute("create function lc_plain(x int) returns int language sql as 'select x + 1'")
        ids = [_model_row(conn, n)[0] for n in ("lc_multi_a", "lc_multi_b")]
        conn.execute(
            "drop function if exists lc_multi_a(real[]), lc_plain(int), lc_nosuch(int), public.lc_multi_b"
        )
        assert _model_row(conn, "lc_multi_a") is None and _model_row(conn, "lc_multi_b") is None
        assert _function(conn, "lc_plain", "int") is None
        assert _tables(conn, ids[0]) == [] and _tables(conn, ids[1]) == []
        conn.execute("drop function if exists lc_multi_a(real[])")  # nothing left: a NOTICE only


def test_drop_with_an_argument_list_that_is_not_the_models_is_42883_and_keeps_it(world):
    with world.connect() as conn:
        label_function(conn, "lc_args")
        _fails(conn, "drop function lc_args(int)", "42883")
        _fails(conn, "drop function lc_args(real[], int)", "42883")
        assert _model_row(conn, "lc_args") is not None and _function(conn, "lc_args")
        _labels(world, conn, "lc_args", rows=5)
        conn.execute("drop function lc_args(pixels real[])")  # argument names are allowed
        assert _model_row(conn, "lc_args") is None


def test_a_plain_function_and_a_model_never_share_a_name(world):
    with world.connect() as conn:
        conn.execute("create function lc_over(x int) returns int language sql as 'select x'")
        _fails(
            conn,
            "create function lc_over(pixels real[]) returns int language onnx "
            """as 'digits_mlp.onnx', '{"output": "label"}'""",
            "42723",
        )
        assert _model_row(conn, "lc_over") is None and _function(conn, "lc_over") is None
        conn.execute("drop function lc_over(int)")
        label_function(conn, "lc_over")
        body = conn.execute("select prosrc from pg_proc where proname = 'lc_over'").fetchone()[0]
        # an overload, a plain replacement, either spelled in public: each would pass for the model
        _fails(conn, "create function lc_over(x int) returns int language sql as 'select x'", "42723")
        _fails(conn, "create function public.lc_over(x int) returns int language sql as 'select x'", "42723")
        _fails(
            conn,
            "create or replace function lc_over(pixels real[]) returns int language sql as 'select 1'",
            "42723",
        )
        conn.execute("create function lc_over_plain(x int) returns int language sql as 'select x'")
        _fails(conn, "alter function lc_over_plain(int) rename to lc_over", "42723")
        assert conn.execute("select prosrc from pg_proc where proname = 'lc_over'").fetchall() == [(body,)]
        # another schema is another namespace
        conn.execute("create schema if not exists lc_elsewhere")
        conn.execute("create function lc_elsewhere.lc_over(x int) returns int language sql as 'select x'")
        _labels(world, conn, "lc_over", rows=5)
        conn.execute("drop function lc_over(real[]), lc_over_plain(int), lc_elsewhere.lc_over(int)")
        assert _model_row(conn, "lc_over") is None


def test_drop_table_cascade_forgets_the_views_over_models(world):
    with world.connect() as conn:
        label_function(conn, "lc_tab")
        conn.execute("create table lc_digits as select * from digits where id < 10")
        conn.execute("create view lc_tab_v as select id, lc_tab(pixels) as digit from lc_digits")
        assert conn.execute("select count(*) from lc_tab_v where digit >= 0").fetchone() == (10,)
        conn.execute("drop table lc_digits cascade")
        _fails(conn, "select count(*) from lc_tab_v where digit >= 0", "42P01")
        assert _model_row(conn, "lc_tab") is not None  # the model does not depend on the table
        conn.execute("drop function lc_tab(real[])")


# -- ALTER FUNCTION ------------------------------------------------------------------------------


def test_rename_is_followed_by_the_catalog_the_caches_and_the_views(world):
    with world.connect() as conn:
        label_function(conn, "lc_ren")
        label_view(conn, "lc_ren_v", "lc_ren")
        expected = _labels(world, conn, "lc_ren")
        before = _model_row(conn, "lc_ren")
        cached = conn.execute(f"select count(*) from {cache_table(conn, 'lc_ren')}").fetchone()[0]
        conn.execute("alter function lc_ren(real[]) rename to lc_ren2")
        assert _model_row(conn, "lc_ren") is None and _model_row(conn, "lc_ren2") == before
        assert _function(conn, "lc_ren") is None and _function(conn, "lc_ren2")
        body = conn.execute("select pg_get_functiondef('lc_ren2(real[])'::regprocedure)").fetchone()[0]
        assert "'lc_ren2'" in body and "'lc_ren'" not in body
        assert conn.execute(f"select count(*) from {cache_table(conn, 'lc_ren2')}").fetchone()[0] == cached
        _fails(conn, "select lc_ren(pixels) from digits where id < 3", "42883")
        _labels(world, conn, "lc_ren2", rows=40)  # 20 cached, 20 new: the renamed model runs
        view = conn.execute("select digit from lc_ren_v where id < 20 order by id").fetchall()
        assert [r[0] for r in view] == expected
        conn.execute("alter routine lc_ren2 rename to lc_ren3")  # no argument list: unique
        assert _model_row(conn, "lc_ren3") == before
        conn.execute("drop function lc_ren3(real[]) cascade")
        assert _model_row(conn, "lc_ren3") is None and _tables(conn, before[0]) == []


def test_rename_onto_a_taken_name_is_refused(world):
    with world.connect() as conn:
        label_function(conn, "lc_taken_a")
        label_function(conn, "lc_taken_b")
        conn.execute("create function lc_taken_plain(x int) returns int language sql as 'select x'")
        _fails(conn, "alter function lc_taken_a(real[]) rename to lc_taken_b", "42723")
        _fails(conn, "alter function lc_taken_a(real[]) rename to lc_taken_plain", "42723")
        _fails(conn, "alter function lc_taken_a(real[]) rename to lc_taken_a", "42723")
        assert _model_row(conn, "lc_taken_a") is not None and _function(conn, "lc_taken_a")
        conn.execute("drop function lc_taken_a(real[]), lc_taken_b(real[]), lc_taken_plain(int)")


def test_set_schema_of_a_model_is_refused(world):
    with world.connect() as conn:
        label_function(conn, "lc_schema")
        conn.execute("create schema if not exists lc_elsewhere")
        error = _fails(conn, "alter function lc_schema(real[]) set schema lc_elsewhere", "0A000")
        assert "public" in str(error)
        assert _function(conn, "lc_schema") and _model_row(conn, "lc_schema") is not None
        conn.execute("alter function lc_schema(real[]) set schema public")  # where it is: a no-op
        # a plain function of another name moves as Postgres moves it
        conn.execute("create function lc_schema_plain(x int) returns int language sql as 'select x'")
        conn.execute("alter function lc_schema_plain(int) set schema lc_elsewhere")
        _labels(world, conn, "lc_schema", rows=5)
        conn.execute("drop function lc_schema(real[])")


def test_owner_to_and_comment_on_are_postgres_own_and_transactional(world):
    with world.connect() as conn:
        conn.execute("do $$ begin create role lc_owner2; exception when duplicate_object then null; end $$")
        label_function(conn, "lc_own")
        with conn.transaction():
            conn.execute("alter function lc_own(real[]) owner to lc_owner2")
            conn.execute("comment on function lc_own(real[]) is 'mine'")
            raise psycopg.Rollback()
        owner = conn.execute("select proowner::regrole::text from pg_proc where proname = 'lc_own'")
        assert owner.fetchone() == ("postgres",)
        conn.execute("alter function lc_own(real[]) owner to lc_owner2")
        owner = conn.execute("select proowner::regrole::text from pg_proc where proname = 'lc_own'")
        assert owner.fetchone() == ("lc_owner2",)
        assert _model_row(conn, "lc_own") is not None
        _labels(world, conn, "lc_own", rows=5)
        conn.execute("drop function lc_own(real[])")


def _comment(conn: psycopg.Connection, name: str) -> str | None:
    return conn.execute(
        "select obj_description(to_regprocedure(%s), 'pg_proc')", (f"{name}(real[])",)
    ).fetchone()[0]


def test_a_users_comment_survives_a_new_version_and_sievedbs_own_follows_a_rename(world):
    with world.connect() as conn:
        label_function(conn, "lc_note")
        assert _comment(conn, "lc_note").startswith("SieveDB model lc_note v1")
        conn.execute("alter function lc_note(real[]) rename to lc_note2")
        assert _comment(conn, "lc_note2").startswith("SieveDB model lc_note2 v1")
        conn.execute("comment on function lc_note2(real[]) is 'digits, by the MLP'")
        label_function(conn, "lc_note2", model_file="digits_logreg.onnx")  # version 2, in place
        assert _model_row(conn, "lc_note2")[1] == 2
        assert _comment(conn, "lc_note2") == "digits, by the MLP"
        conn.execute("alter function lc_note2(real[]) rename to lc_note3")
        assert _comment(conn, "lc_note3") == "digits, by the MLP"
        conn.execute("drop function lc_note3(real[])")


# -- CREATE OR REPLACE ---------------------------------------------------------------------------


def test_a_new_version_of_another_shape_with_dependent_views_fails_and_changes_nothing(world):
    with world.connect() as conn:
        label_function(conn, "lc_shape")
        label_view(conn, "lc_shape_v", "lc_shape")
        before = _model_row(conn, "lc_shape")
        # returns real instead of int: the function must be dropped and made again
        _fails(
            conn,
            "create or replace function lc_shape(pixels real[]) returns real language onnx "
            """as 'digits_mlp.onnx', '{"output": "label"}'""",
            "2BP01",
        )
        assert _model_row(conn, "lc_shape") == before and _tables(conn, before[0]) == [f"m{before[0]}_v1"]
        assert conn.execute(
            "select prorettype::regtype::text from pg_proc where proname = 'lc_shape'"
        ).fetchone() == ("integer",)
        _labels(world, conn, "lc_shape", rows=5)
        _fails(
            conn,
            "create or replace function lc_shape(pixels real[]) returns int language onnx "
            """as 'digits_logreg.onnx', '{"output": "label"}'; select 1""",
            "0A000",
        )
        assert _model_row(conn, "lc_shape") == before
        conn.execute("drop function lc_shape(real[]) cascade")


# -- transaction blocks --------------------------------------------------------------------------

IN_BLOCK = [
    "drop function lc_tx(real[])",
    "drop function lc_tx(real[]) cascade",
    "alter function lc_tx(real[]) rename to lc_tx2",
    "create or replace function lc_tx(pixels real[]) returns int language onnx "
    """as 'digits_logreg.onnx', '{"output": "label"}'""",
]


@pytest.mark.parametrize("statement", IN_BLOCK)
def test_model_ddl_inside_a_transaction_block_is_refused_and_changes_nothing(world, statement):
    with world.connect() as conn:
        label_function(conn, "lc_tx")
        before = _model_row(conn, "lc_tx")
        conn.execute("begin")
        _fails(conn, statement, "25001")  # the block is aborted, then rolled back
        assert _model_row(conn, "lc_tx") == before and _function(conn, "lc_tx")
        assert _tables(conn, before[0]) == [f"m{before[0]}_v1"]
        _labels(world, conn, "lc_tx", rows=5)
        conn.execute("drop function lc_tx(real[])")


def test_model_ddl_in_a_failed_block_is_refused_and_a_rollback_in_front_of_it_is_not(world):
    with world.connect() as conn:
        label_function(conn, "lc_failed")
        conn.execute("begin")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("select 1/0")
        _fails(conn, "drop function lc_failed(real[])", "25001")
        assert _model_row(conn, "lc_failed") is not None and _function(conn, "lc_failed")
        conn.execute("begin")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("select 1/0")
        conn.execute("rollback; drop function lc_failed(real[])")  # the block ends first
        assert _model_row(conn, "lc_failed") is None and _function(conn, "lc_failed") is None


def test_a_block_closed_in_the_same_query_string_is_followed(world):
    with world.connect() as conn:
        label_function(conn, "lc_blk")
        conn.execute("begin; drop function lc_blk(real[]); rollback")
        assert _model_row(conn, "lc_blk") is not None and _function(conn, "lc_blk")
        _labels(world, conn, "lc_blk", rows=5)
        _fails(conn, "begin; drop function lc_blk(real[])", "25001")  # would stay undecided
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        _fails(conn, "drop function lc_blk(real[]); prepare transaction 'lc'", "25001")
        model_id = _model_row(conn, "lc_blk")[0]
        conn.execute("begin; alter function lc_blk(real[]) rename to lc_blk2; commit")
        assert _model_row(conn, "lc_blk2") is not None and _model_row(conn, "lc_blk") is None
        conn.execute("begin; drop function lc_blk2(real[]); commit")
        assert _model_row(conn, "lc_blk2") is None and _tables(conn, model_id) == []


def test_a_model_call_cannot_ride_along_with_model_ddl(world):
    with world.connect() as conn:
        label_function(conn, "lc_ride")
        label_function(conn, "lc_ride_other")
        label_view(conn, "lc_ride_v", "lc_ride")
        _fails(
            conn, "drop function lc_ride(real[]) cascade; select lc_ride_other(pixels) from digits", "0A000"
        )
        assert _model_row(conn, "lc_ride") is not None
        conn.execute("drop view lc_ride_v; drop function lc_ride(real[]); select 1")
        assert _model_row(conn, "lc_ride") is None and _function(conn, "lc_ride") is None
        # a statement that only looks like DDL (the words in a literal) is planned as a query
        rows = conn.execute(
            "select lc_ride_other(pixels) from digits where id < 5 and 'drop function cascade' <> ''"
        ).fetchall()
        assert len(rows) == 5
        conn.execute("drop function lc_ride_other(real[])")


# -- other protocols -----------------------------------------------------------------------------


def test_prepared_ddl_over_the_extended_protocol_is_followed(world):
    with world.connect() as conn:
        label_function(conn, "lc_ext")
        conn.execute("alter function lc_ext(real[]) rename to lc_ext2", prepare=True)
        assert _model_row(conn, "lc_ext2") is not None
        _fails_prepared = pytest.raises(psycopg.Error)
        with _fails_prepared as caught:
            conn.execute("drop function lc_ext2(int)", prepare=True)
        assert caught.value.sqlstate == "42883"
        conn.execute("alter function lc_ext2(real[]) rename to lc_ext3", binary=True)  # unnamed statement
        assert _model_row(conn, "lc_ext3") is not None and _function(conn, "lc_ext2") is None
        conn.execute("drop function lc_ext3(real[])", prepare=True)
        assert _model_row(conn, "lc_ext3") is None and _function(conn, "lc_ext3") is None


def test_asyncpg_simple_and_prepared_ddl_are_followed(world):
    with world.connect() as conn:
        label_function(conn, "lc_apg")
        model_id = _model_row(conn, "lc_apg")[0]

    async def run() -> None:
        db = await asyncpg.connect(world.server.dsn())
        try:
            await db.execute("alter function lc_apg(real[]) rename to lc_apg2")  # simple protocol
            await db.fetch("alter function lc_apg2(real[]) rename to lc_apg3")  # prepared
            block = db.transaction()
            await block.start()
            with pytest.raises(asyncpg.PostgresError) as caught:
                await db.fetch("drop function lc_apg3(real[])")
            assert caught.value.sqlstate == "25001"
            await block.rollback()
            assert await db.fetchval("select 1") == 1
        finally:
            await db.close()

    asyncio.run(run())
    with world.connect() as conn:
        assert _model_row(conn, "lc_apg3")[0] == model_id and _function(conn, "lc_apg3")
        conn.execute("drop function lc_apg3(real[])")
        assert _tables(conn, model_id) == []


# -- a role that is not a superuser ---------------------------------------------------------------


def _role(conn: psycopg.Connection, role: str) -> None:
    conn.execute(f"do $$ begin create role {role} login; exception when duplicate_object then null; end $$")


def test_roles_drop_and_rename_only_what_postgres_lets_them(world):
    with world.connect() as conn:
        for role in ("lc_admin", "lc_stranger"):
            _role(conn, role)
        conn.execute("grant sieve_model_admin to lc_admin")
        conn.execute("grant create on schema public to lc_admin")
        conn.execute("grant select on digits to lc_admin, lc_stranger")
    admin = psycopg.connect(world.server.dsn(user="lc_admin"), autocommit=True)
    stranger = psycopg.connect(world.server.dsn(user="lc_stranger"), autocommit=True)
    with admin, stranger:
        label_function(admin, "lc_owned")
        before = _model_row(admin, "lc_owned")
        _fails(stranger, "drop function lc_owned(real[])", "42501")
        _fails(stranger, "alter function lc_owned(real[]) rename to lc_stolen", "42501")
        _fails(stranger, "alter function lc_owned(real[]) owner to lc_stranger", "42501")
        assert _model_row(admin, "lc_owned") == before and _function(admin, "lc_owned")
        admin.execute("alter function lc_owned(real[]) rename to lc_owned2")
        assert _model_row(admin, "lc_owned2") == before
        _labels(world, admin, "lc_owned2", rows=5)
        _fails(admin, "alter function lc_owned2(real[]) set schema pg_temp", "0A000")
        label_function(admin, "lc_owned_more")
        more = _model_row(admin, "lc_owned_more")
    with world.connect() as conn:
        conn.execute("drop owned by lc_admin")  # takes the admin's model functions with it
        assert _model_row(conn, "lc_owned2") is None and _model_row(conn, "lc_owned_more") is None
        assert _tables(conn, before[0]) == [] and _tables(conn, more[0]) == []


# -- behind SieveDB's back, and restarts ----------------------------------------------------------


def test_a_restart_follows_functions_dropped_or_renamed_behind_sievedbs_back(world, tmp_path):
    postgres = PlainPostgres(data_dir=tmp_path / "pg").start()
    server = SieveProcess(
        data_dir=tmp_path / "server" / "data",
        extra_args=["--postgres-dsn", postgres.dsn(), "--models-dir", str(world.models_dir)],
    )
    through = server.dsn(password=postgres.password)
    try:
        server.start()
        with psycopg.connect(through, autocommit=True) as conn:
            conn.execute("create table digits (id int primary key, pixels real[])")
            with conn.cursor().copy("copy digits (id, pixels) from stdin") as copy:
                for i in range(20):
                    copy.write_row((i, world.digits.x[i].tolist()))
            for name in ("lc_keep", "lc_gone", "lc_moved"):
                label_function(conn, name)
                _labels(world, conn, name, rows=10)
            rows = {n: _model_row(conn, n) for n in ("lc_keep", "lc_gone", "lc_moved")}
        server.stop()
        with psycopg.connect(postgres.dsn(), autocommit=True) as direct:  # SieveDB is not looking
            direct.execute("drop function lc_gone(real[])")
            direct.execute("alter function lc_moved(real[]) rename to lc_moved2")
        server.start()
        with psycopg.connect(through, autocommit=True) as conn:
            assert _model_row(conn, "lc_gone") is None and _function(conn, "lc_gone") is None
            assert _tables(conn, rows["lc_gone"][0]) == []
            assert _model_row(conn, "lc_moved") is None and _model_row(conn, "lc_moved2") == rows["lc_moved"]
            assert _tables(conn, rows["lc_moved"][0]) == [f"m{rows['lc_moved'][0]}_v1"]
            body = conn.execute("select pg_get_functiondef('lc_moved2(real[])'::regprocedure)").fetchone()[0]
            assert "'lc_moved2'" in body
            _labels(world, conn, "lc_moved2", rows=20)
            assert _model_row(conn, "lc_keep") == rows["lc_keep"]
            _labels(world, conn, "lc_keep", rows=20)
            with psycopg.connect(postgres.dsn(), autocommit=True) as direct:  # now while it runs
                direct.execute("drop function lc_keep(real[])")
            label_function(conn, "lc_next")  # any model DDL catches up first
            assert _model_row(conn, "lc_keep") is None and _tables(conn, rows["lc_keep"][0]) == []
        log = server.log()
        assert "model lc_gone: its function is gone" in log
        assert "model lc_moved: its function was renamed to lc_moved2" in log
    finally:
        server.stop()
        postgres.stop()
