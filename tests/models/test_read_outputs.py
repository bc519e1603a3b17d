"""Cached outputs read back by row identity (planner.row_maps, planner.read_outputs): the same
answers as the model, with the function's own semantics wherever a row has no map entry."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from pglast import parse_sql

from planner.model_spec import ModelSpec
from planner.read_outputs import read_outputs_sql
from planner.row_maps import MapKey, RowMap
from storage.embedded import EmbeddedPostgres, EmbeddedSettings
from tests.inference.models import row_index_model
from tests.models.conftest import direct_run, label_function
from tests.support.model_files import cache_table

NULL_ID = 5000  # a row whose input is NULL


def direct(world, user: str = "postgres") -> psycopg.Connection:
    """The backing Postgres itself, bypassing SieveDB (nothing is materialized there)."""
    socket_dir = EmbeddedPostgres(EmbeddedSettings(data_dir=world.server.data_dir)).socket_dir
    return psycopg.connect(host=str(socket_dir), port=5432, user=user, dbname="postgres", autocommit=True)


def maps_of(conn, model: str, table: str) -> list[str]:
    """The row maps of ``model`` over ``table`` (sieve_cache.m<id>_v<n>_r<oid>_c<attnums>)."""
    prefix = cache_table(conn, model).split(".")[1]
    oid = conn.execute("select %s::regclass::oid", (table,)).fetchone()[0]
    rows = conn.execute(
        "select relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = 'sieve_cache' and relname ~ %s",
        (f"^{prefix}_r{oid}_c[0-9_]+$",),
    ).fetchall()
    return [f"sieve_cache.{r[0]}" for r in rows]


def calls(conn, sql: str) -> tuple[int, int]:
    calls, hits = conn.execute(
        "select model_calls, cache_hits from sieve.query_log where query = %s order by query_id desc limit 1",
        (sql,),
    ).fetchone()
    return sum(calls.values()), hits


@pytest.fixture(scope="module")
def ro(world):
    expected = direct_run(world.mlp_path, {"X": world.digits.x})["label"].tolist()
    with world.connect() as conn:
        conn.execute("create table ro_digits (id int primary key, pixels real[], label int)")
        conn.execute("insert into ro_digits select id, pixels, label from digits")
        conn.execute("insert into ro_digits values (%s, null, null)", (NULL_ID,))
        label_function(conn, "ro_label")
    return world, {**dict(enumerate(expected)), NULL_ID: None}


def test_a_second_read_comes_from_the_row_map_with_the_models_answers(ro):
    world, expected = ro
    sql = "select id, ro_label(pixels) from ro_digits order by id"
    with world.connect() as conn:
        first = conn.execute(sql).fetchall()
        assert first == sorted(expected.items())
        (mapped,) = maps_of(conn, "ro_label", "ro_digits")
        entries = f"select count(*) from {mapped} where ordinal = 0"
        assert conn.execute(entries).fetchone()[0] == len(expected) - 1
        # with the cache emptied behind SieveDB's back, only the map can still answer
        conn.execute(f"delete from {cache_table(conn, 'ro_label')}")
        assert conn.execute(sql).fetchall() == first
        assert calls(conn, sql) == (0, len(expected) - 1)


def test_result_columns_keep_their_names_and_star_its_columns(ro):
    world, expected = ro
    with world.connect() as conn:
        cur = conn.execute(
            "select *, ro_label(pixels), ro_label(pixels)::text from ro_digits where id < 3 order by id"
        )
        assert [c.name for c in cur.description] == ["id", "pixels", "label", "ro_label", "ro_label"]
        assert [(r[0], r[3], r[4]) for r in cur.fetchall()] == [
            (i, expected[i], str(expected[i])) for i in range(3)
        ]


def test_grouped_and_filtered_reads_equal_a_plain_table_of_the_outputs(ro):
    world, expected = ro
    with world.connect() as conn:
        conn.execute("create table ro_plain (id int, digit int)")
        with conn.cursor().copy("copy ro_plain from stdin") as copy:
            for i, d in expected.items():
                copy.write_row((i, d))
        pairs = [
            (
                "select ro_label(pixels), count(*) from ro_digits group by ro_label(pixels) order by 1",
                "select digit, count(*) from ro_plain group by digit order by 1",
            ),
            (
                "select count(*) from ro_digits where ro_label(pixels) = 3 and id % 2 = 0",
                "select count(*) from ro_plain where digit = 3 and id % 2 = 0",
            ),
            (
                "select id from ro_digits where ro_label(pixels) is null",
                "select id from ro_plain where digit is null",
            ),
            (
                "select sum(ro_label(pixels)) filter (where id < 100), avg(ro_label(pixels)) from ro_digits",
                "select sum(digit) filter (where id < 100), avg(digit) from ro_plain",
            ),
        ]
        for model_sql, plain_sql in pairs:
            assert conn.execute(model_sql).fetchall() == conn.execute(plain_sql).fetchall(), model_sql


def test_updated_rewritten_and_frozen_tables_read_right(ro):
    world, expected = ro
    sql = "select id, ro_label(pixels) from ro_digits order by id"
    with world.connect() as conn:
        conn.execute("create table ro_moving as select * from ro_digits")
        moving = sql.replace("ro_digits", "ro_moving")
        assert conn.execute(moving).fetchall() == sorted(expected.items())
        # a new tuple version (new xmin) must read its own input's output
        conn.execute("update ro_moving set pixels = (select pixels from ro_digits where id = 1) where id = 0")
        changed = sorted({**expected, 0: expected[1]}.items())
        assert conn.execute(moving).fetchall() == changed
        # VACUUM FULL moves every tuple (new tids, new relfilenode): no entry may match a moved row
        conn.execute("delete from ro_moving where id between 10 and 500")
        conn.execute("vacuum full ro_moving")
        kept = [(i, d) for i, d in changed if not 10 <= i <= 500]
        assert conn.execute(moving).fetchall() == kept
        assert calls(conn, moving)[0] == 0  # every input is still cached: only the map was redone
        # VACUUM FREEZE keeps the raw xmin: the entries still match their tuples
        (mapped,) = maps_of(conn, "ro_label", "ro_moving")
        held = (
            f"select count(*) from ro_moving t join {mapped} m on m.tid = t.ctid and m.xid = t.xmin "
            "and m.filenode = pg_relation_filenode('ro_moving')"
        )
        before = conn.execute(held).fetchone()[0]
        conn.execute("vacuum freeze ro_moving")
        assert conn.execute(held).fetchone()[0] == before == len(kept) - 1
        assert conn.execute(moving).fetchall() == kept


def test_rows_without_an_entry_read_through_the_function(ro):
    """The statement as SieveDB forwards it, run straight on Postgres: a row the map does not
    hold gets the function's answer, error or NULL, as before maps."""
    world, expected = ro
    with world.connect() as conn:
        conn.execute("select count(*) from ro_digits where ro_label(pixels) >= 0")  # maps every row
        row = conn.execute("select * from sieve.models where name = 'ro_label'").fetchone()
        names = [d.name for d in conn.execute("select * from sieve.models limit 0").description]
        (mapped,) = maps_of(conn, "ro_label", "ro_digits")
        relid = conn.execute("select 'ro_digits'::regclass::oid").fetchone()[0]
    spec = ModelSpec.from_row(dict(zip(names, row, strict=True)))
    key = MapKey("ro_label", ("ro_digits",), ("pixels",))
    maps = {key: RowMap(key, mapped, relid, ("value",), ("id", "pixels", "label"))}

    def rewritten(sql: str) -> str:
        text = read_outputs_sql([parse_sql(sql)[0].stmt], {"ro_label": spec}, maps)
        assert text is not None and mapped in text
        return text

    with direct(world) as pg:
        pg.execute("insert into ro_digits values (6000, array_fill(0.25::real, array[64]), null)")
        ok = rewritten(f"select id, ro_label(pixels) from ro_digits where id in (7, {NULL_ID}) order by id")
        assert pg.execute(ok).fetchall() == [(7, expected[7]), (NULL_ID, None)]
        missing = rewritten("select id, ro_label(pixels) from ro_digits where id = 6000")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            pg.execute(missing)
        pg.execute("set sieve.lenient = on")
        assert pg.execute(missing).fetchall() == [(6000, None)]
        pg.execute("delete from ro_digits where id = 6000")


def test_models_returning_rows_keep_their_path(world):
    path = row_index_model(world.models_dir)
    x = np.random.default_rng(9).random((60, 4)).astype(np.float32)
    with world.connect() as conn:
        conn.execute("create table ro_boxes (id int primary key, x real[])")
        with conn.cursor().copy("copy ro_boxes from stdin") as copy:
            for i, row in enumerate(x):
                copy.write_row((i, row.tolist()))
        conn.execute("insert into ro_boxes values (60, null)")
        conn.execute(
            "create function ro_detect(x real[]) returns table (det_row bigint, score real) language onnx "
            f'as \'{path.name}\', \'{{"rows": "row_index", "outputs": {{"det_row": "row"}}}}\''
        )
        sql = "select b.id, d.score from ro_boxes b, lateral ro_detect(b.x) d order by b.id"
        for _ in range(2):
            rows = conn.execute(sql).fetchall()
            assert [r[0] for r in rows] == [i for i in range(60) if x[i, 0] > 0.5]
            np.testing.assert_allclose([r[1] for r in rows], [x[i, 1] for i in range(60) if x[i, 0] > 0.5])
        assert maps_of(conn, "ro_detect", "ro_boxes") == []


@pytest.fixture(scope="module")
def roles(ro):
    world, expected = ro
    with world.connect() as conn:
        label_function(conn, "ro_gated")
        conn.execute("revoke execute on function ro_gated(real[]) from public")
        for role in ("ro_alice", "ro_bob", "ro_carol"):
            conn.execute(f"drop role if exists {role}")
            conn.execute(f"create role {role} login")
        conn.execute("grant select on ro_digits to ro_alice, ro_bob")
        conn.execute("grant execute on function ro_gated(real[]) to ro_bob, ro_carol")
        conn.execute("create schema ro_bobs authorization ro_bob")
    return world, expected


def test_a_role_with_execute_reads_its_outputs_by_row_identity(roles):
    world, expected = roles
    sql = "select id, ro_gated(pixels) from ro_digits where id < 300 order by id"
    with world.connect(user="ro_bob") as conn:
        assert conn.execute(sql).fetchall() == [(i, expected[i]) for i in range(300)]
        assert conn.execute(sql).fetchall() == [(i, expected[i]) for i in range(300)]
        assert calls(conn, sql) == (0, 300)
    with world.connect() as conn:
        (mapped,) = maps_of(conn, "ro_gated", "ro_digits")
    with direct(world, "ro_bob") as pg:
        assert pg.execute(f"select count(*) from {mapped} where ordinal = 0").fetchone()[0] == 300


def test_a_role_without_execute_or_select_sees_no_entry(roles):
    world, _ = roles
    with world.connect() as conn:
        (mapped,) = maps_of(conn, "ro_gated", "ro_digits")
    with world.connect(user="ro_alice") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select id, ro_gated(pixels) from ro_digits where id < 300")
    for role in ("ro_alice", "ro_carol"):  # no EXECUTE; EXECUTE but no SELECT on the table
        with direct(world, role) as pg:
            assert pg.execute(f"select count(*) from {mapped}").fetchone()[0] == 0, role


def test_a_session_that_shadows_the_table_only_fools_itself(roles):
    world, expected = roles
    with world.connect(user="ro_bob") as conn:
        conn.execute("set search_path = ro_bobs, public")
        conn.execute("create table ro_bobs.ro_digits (id int, pixels real[])")
        conn.execute("insert into ro_bobs.ro_digits select id, pixels from public.ro_digits where id = 1")
        conn.execute("update ro_bobs.ro_digits set id = 0")  # bob's row 0 holds the pixels of 1
        assert conn.execute("select ro_gated(pixels) from ro_digits").fetchall() == [(expected[1],)]
        conn.execute("create temp table ro_digits (id int, pixels real[])")  # pg_temp comes first
        conn.execute("insert into ro_digits select id, pixels from public.ro_digits where id = 2")
        assert conn.execute("select ro_gated(pixels) from ro_digits").fetchall() == [(expected[2],)]
    with world.connect() as conn:
        assert maps_of(conn, "ro_gated", "ro_bobs.ro_digits")  # keyed by bob's own table
        rows = conn.execute("select id, ro_gated(pixels) from ro_digits where id < 5 order by id").fetchall()
        assert rows == [(i, expected[i]) for i in range(5)]


def test_tables_with_row_level_security_get_no_map(roles):
    world, expected = roles
    with world.connect() as conn:
        conn.execute("create table ro_rls as select * from ro_digits where id < 200")
        conn.execute("alter table ro_rls enable row level security")
        conn.execute("create policy tens on ro_rls for select to ro_bob using (id % 10 = 0)")
        conn.execute("grant select on ro_rls to ro_bob")
    with world.connect(user="ro_bob") as conn:
        rows = conn.execute("select id, ro_gated(pixels) from ro_rls order by id").fetchall()
    assert rows == [(i, expected[i]) for i in range(0, 200, 10)]
    with world.connect() as conn:
        assert maps_of(conn, "ro_gated", "ro_rls") == []


def test_a_complete_map_vouches_for_old_rows_and_new_rows_still_run(ro):
    world, expected = ro
    sql = "select id, ro_label(pixels) from ro_mark order by id"
    with world.connect() as conn:
        conn.execute("create table ro_mark as select * from ro_digits where id < 200")
        assert conn.execute(sql).fetchall() == [(i, expected[i]) for i in range(200)]
        (mapped,) = maps_of(conn, "ro_label", "ro_mark")
        marker = f"select xid::text::bigint from {mapped} where ordinal = -2"
        (first,) = conn.execute(marker).fetchone()
        assert conn.execute(sql).fetchall() == [(i, expected[i]) for i in range(200)]
        # a row inserted since is newer than the marker: it runs, and the map is marked again
        conn.execute("insert into ro_mark values (200, array_fill(0.5::real, array[64]), null)")
        rows = conn.execute(sql).fetchall()
        assert len(rows) == 201 and rows[:200] == [(i, expected[i]) for i in range(200)]
        assert calls(conn, sql) == (1, 200)
        assert conn.execute(marker).fetchone()[0] > first
        # a narrowed pass enters its rows but vouches for nothing more
        conn.execute("update ro_mark set pixels = (select pixels from ro_digits where id = 3) where id = 7")
        narrowed = "select ro_label(pixels) from ro_mark where id = 7"
        assert conn.execute(narrowed).fetchall() == [(expected[3],)]
        assert conn.execute(sql).fetchall()[7] == (7, expected[3])


def test_a_models_maps_can_be_dropped_with_it(ro):
    from planner.install import drop_maps_sql

    world, _ = ro
    with world.connect() as conn:
        conn.execute("select count(*) from ro_digits where ro_label(pixels) = 1")
        assert maps_of(conn, "ro_label", "ro_digits")
        model_id = conn.execute("select id from sieve.models where name = 'ro_label'").fetchone()[0]
    with direct(world) as pg:
        pg.execute(drop_maps_sql(model_id))
    with world.connect() as conn:
        assert maps_of(conn, "ro_label", "ro_digits") == []


def test_reads_inside_transaction_blocks_and_over_the_extended_protocol(ro):
    world, expected = ro
    sql = "select id, ro_label(pixels) from ro_digits where id < 50 order by id"
    want = [(i, expected[i]) for i in range(50)]
    with world.connect() as conn:
        for isolation in ("read committed", "repeatable read"):
            conn.execute(f"begin isolation level {isolation}")
            assert psycopg.ClientCursor(conn).execute(sql).fetchall() == want
            conn.execute(
                "insert into ro_digits values (7000, (select pixels from ro_digits where id = 4), 4)"
            )
            rows = psycopg.ClientCursor(conn).execute(sql.replace("id < 50", "id in (1, 7000)")).fetchall()
            assert rows == [(1, expected[1]), (7000, expected[4])]  # the block's own new row
            conn.execute("rollback")
        assert conn.execute(sql, prepare=True).fetchall() == want  # extended protocol: the function


def test_dropping_a_model_drops_its_row_maps(ro):
    world, _ = ro
    with world.connect() as conn:
        label_function(conn, "ro_doomed")
        conn.execute("select id, ro_doomed(pixels) from ro_digits where id < 50").fetchall()
        conn.execute("select id, ro_doomed(pixels) from ro_digits where id < 50").fetchall()
        prefix = cache_table(conn, "ro_doomed").split(".")[1].split("_v")[0]
        assert maps_of(conn, "ro_doomed", "ro_digits"), "the reads made no row map"
        conn.execute("drop function ro_doomed(real[])")
        left = conn.execute(
            "select relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'sieve_cache' and relname like %s",
            (f"{prefix}\\_%",),
        ).fetchall()
    assert left == []
