"""Cached outputs belong to their input and their model: no MD5 collisions, no shared tables."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import psycopg
import pytest
from pglast import parse_sql

from inference.signature import load_signature
from planner.model_ddl import read_create
from planner.model_spec import bind_signature
from storage.migrations import available_migrations, migrate
from tests.support.model_files import cache_table, direct_run
from tests.support.servers import PlainPostgres, SieveProcess

# Wang & Yu's MD5 collision (EUROCRYPT 2005): two 128-byte messages, six bytes apart.
WANG_A = bytes.fromhex(
    "d131dd02c5e6eec4693d9a0698aff95c2fcab58712467eab4004583eb8fb7f89"
    "55ad340609f4b30283e488832571415a085125e8f7cdc99fd91dbdf280373c5b"
    "d8823e3156348f5bae6dacd436c919c6dd53e2b487da03fd02396306d248cda0"
    "e99f33420f577ee8ce54b67080a80d1ec69821bcb6a8839396f9652b6ff72a70"
)
WANG_B = bytes.fromhex(
    "d131dd02c5e6eec4693d9a0698aff95c2fcab50712467eab4004583eb8fb7f89"
    "55ad340609f4b30283e4888325f1415a085125e8f7cdc99fd91dbd7280373c5b"
    "d8823e3156348f5bae6dacd436c919c6dd53e23487da03fd02396306d248cda0"
    "e99f33420f577ee8ce54b67080280d1ec69821bcb6a8839396f965ab6ff72a70"
)


def test_an_md5_colliding_pair_gets_two_different_outputs(lab):
    assert WANG_A != WANG_B and hashlib.md5(WANG_A).digest() == hashlib.md5(WANG_B).digest()
    with lab.connect() as conn:
        conn.execute(
            "create function echo_bytes(b bytea) returns real[] language onnx "
            """as 'bytes_echo.onnx', '{"b": {"decode": "bytes"}}'"""
        )
        conn.execute("create table colliding (id int, b bytea)")
        conn.execute("insert into colliding values (1, %s), (2, %s)", (WANG_A, WANG_B))
        rows = conn.execute("select id, echo_bytes(b) from colliding order by id").fetchall()
        # and again, one at a time: the second must not be answered from the first one's cache
        again = [
            conn.execute(f"select echo_bytes('\\x{b.hex()}'::bytea)").fetchone()[0] for b in (WANG_B, WANG_A)
        ]
        digests = conn.execute(f"select digest from {cache_table(conn, 'echo_bytes')}").fetchall()
    assert rows[0][1] == list(WANG_A) and rows[1][1] == list(WANG_B)
    assert again == [list(WANG_B), list(WANG_A)]
    expected = sorted(hashlib.sha256(b).digest() for b in (WANG_A, WANG_B))
    assert sorted(bytes(d) for (d,) in digests) == expected


def test_names_sharing_a_61_byte_prefix_keep_their_own_outputs(lab):
    prefix = "digit_model_whose_name_is_long_enough_to_be_truncated_by_pg_x"
    long63, long62 = prefix + "ab", prefix + "b"
    assert len(long63.encode()) == 63 and len(long62.encode()) == 62
    with lab.connect() as conn:
        conn.execute(
            f'create function "{long63}"(pixels real[]) returns int language onnx '
            """as 'digits_mlp.onnx', '{"output": "label"}'"""
        )
        conn.execute(
            f"create function \"{long62}\"(pixels real[]) returns real language onnx as 'digits_mlp.onnx', "
            """'{"output": {"output": "probabilities", "post": {"op": "index", "index": 7}}}'"""
        )
        rows = conn.execute(
            f'select "{long63}"(pixels), "{long62}"(pixels) from digits where id < 50 order by id'
        ).fetchall()
        tables = {cache_table(conn, long63), cache_table(conn, long62)}
    out = direct_run(lab.mlp_path, {"X": lab.digits.x[:50]})
    assert [r[0] for r in rows] == out["label"].tolist()
    np.testing.assert_allclose([r[1] for r in rows], out["probabilities"][:, 7], rtol=1e-6)
    assert len(tables) == 2


@pytest.mark.parametrize("name", ['we"ird', "select", "δείγμα_ψηφίων", "x" * 63])
def test_any_legal_identifier_registers_and_works_end_to_end(lab, name):
    quoted = '"' + name.replace('"', '""') + '"'
    literal = name.replace("'", "''")
    view = quoted[:-1] + '_v"' if len(name.encode()) < 60 else '"view_of_long"'
    with lab.connect() as conn:
        conn.execute(
            f"create function {quoted}(pixels real[]) returns int language onnx "
            """as 'digits_mlp.onnx', '{"output": "label"}'"""
        )
        conn.execute(f"create view {view} as select d.id, {quoted}(d.pixels) as digit from digits d")
        through_view = conn.execute(f"select digit from {view} where id < 30 order by id").fetchall()
        direct = conn.execute(f"select {quoted}(pixels) from digits where id < 30 order by id").fetchall()
        removed = conn.execute("select sieve.clear_cache(%s)", (name,)).fetchone()[0]
        after = conn.execute(f"select count(*) from {view} where id < 30 and digit >= 0").fetchone()[0]
        conn.execute(f"drop view {view}")
        conn.execute(f"drop function {quoted}(real[])")
        left = conn.execute("select count(*) from sieve.models where name = %s", (name,)).fetchone()[0]
    expected = direct_run(lab.mlp_path, {"X": lab.digits.x[:30]})["label"].tolist()
    assert [r[0] for r in through_view] == expected == [r[0] for r in direct]
    assert removed == 30 and after == 30 and left == 0, literal


OLD_FUNCTION = """
CREATE FUNCTION public.old_digit(pixels real[]) RETURNS int LANGUAGE sql STABLE STRICT
AS $sieve$ SELECT coalesce((SELECT c.value FROM sieve_cache."old_digit_v1" c
    WHERE c.digest = md5(array_send(($1)::real[]))::uuid AND c.ordinal = 0),
    sieve.not_materialized('old_digit', 1)::int) $sieve$
"""


def test_models_registered_before_the_upgrade_keep_working(tmp_path, lab):
    """A catalog as the md5 / name-keyed release left it: the old cache is dropped, the model is
    re-installed on start, and its view answers with fresh outputs (not the stale cached ones)."""
    postgres = PlainPostgres(data_dir=tmp_path / "pg").start()
    server = None
    try:
        stmt = parse_sql(
            "create function old_digit(pixels real[]) returns int language onnx "
            """as 'digits_mlp.onnx', '{"output": "label"}'"""
        )[0].stmt
        spec = read_create(stmt).spec
        spec.path = str(lab.mlp_path)
        signature = load_signature(lab.mlp_path)
        spec.content_hash = signature.sha256
        bind_signature(spec, signature)
        row = spec.to_row()
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            import asyncio

            import asyncpg

            async def old_schema() -> None:
                db = await asyncpg.connect(postgres.dsn())
                try:
                    await migrate(db, [m for m in available_migrations() if m.version < 6])
                finally:
                    await db.close()

            asyncio.run(old_schema())
            conn.execute(
                'create table sieve_cache."old_digit_v1" (digest uuid not null, ordinal int not null '
                "default 0, value int, primary key (digest, ordinal))"
            )
            conn.execute(OLD_FUNCTION)
            conn.execute(
                "insert into sieve.models (name, path, content_hash, version, signature, options) "
                "values (%s, %s, %s, 1, %s::jsonb, %s::jsonb)",
                (row["name"], row["path"], row["content_hash"], row["signature"], json.dumps(spec.options)),
            )
            # a stale (wrong) cached output for every digit: the upgrade must not serve them
            conn.execute("create table digits (id int primary key, pixels real[])")
            conn.execute(
                "insert into digits select i, %s::real[] from generate_series(0, 0) i",
                (lab.digits.x[0].tolist(),),
            )
            conn.execute(
                """insert into sieve_cache."old_digit_v1" select md5(array_send(pixels))::uuid, 0, 99 """
                "from digits"
            )
            conn.execute("create view old_v as select id, old_digit(pixels) as digit from digits")
        server = SieveProcess(
            data_dir=tmp_path / "server" / "data",
            extra_args=["--postgres-dsn", postgres.dsn(), "--models-dir", str(lab.models_dir)],
        ).start()
        with psycopg.connect(server.dsn(password=postgres.password), autocommit=True) as conn:
            rows = conn.execute("select id, digit from old_v order by id").fetchall()
            gone = conn.execute("select to_regclass('sieve_cache.\"old_digit_v1\"')").fetchone()[0]
            table = cache_table(conn, "old_digit")
    finally:
        if server is not None:
            server.stop()
        postgres.stop()
    expected = direct_run(lab.mlp_path, {"X": lab.digits.x[:1]})["label"].tolist()
    assert rows == [(0, expected[0])] and gone is None and table.startswith("sieve_cache.m")
