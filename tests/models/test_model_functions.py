"""Models as SQL functions, end to end through a real server and real clients."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from tests.models.conftest import direct_run


def _model_calls(conn, like: str) -> list[dict]:
    rows = conn.execute(
        "select model_calls, cache_hits from sieve.query_log where query like %s order by query_id",
        (like,),
    ).fetchall()
    return [(calls, hits) for calls, hits in rows]


def test_scalar_model_function_matches_onnxruntime_row_for_row(world):
    with world.connect() as conn:
        conn.execute(
            "create function digit_oracle(pixels real[]) returns int language onnx "
            "as 'digits_mlp.onnx', '{\"output\": \"label\"}'"
        )
        rows = conn.execute(
            "select id, digit_oracle(pixels) from digits where id < 100 order by id"
        ).fetchall()
        expected = direct_run(world.mlp_path, {"X": world.digits.x[:100]})["label"]
        assert [r[0] for r in rows] == list(range(100))
        assert [r[1] for r in rows] == expected.tolist()
        # the model ran exactly for the 100 rows that reach the call, then never again
        again = conn.execute("select id, digit_oracle(pixels) from digits where id < 100 order by id")
        assert again.fetchall() == rows
        log = _model_calls(conn, "select id, digit_oracle(pixels) from digits where id < 100%")
        assert log[0] == ({"digit_oracle": 100}, 0)
        assert log[1] == ({"digit_oracle": 0}, 100)
        model = conn.execute(
            "select version, content_hash, stats->>'rows', cost_ms_per_row from sieve.models "
            "where name = 'digit_oracle'"
        ).fetchone()
        assert model[0] == 1 and len(model[1]) == 64 and int(model[2]) >= 100
        assert model[3]["cpu"] > 0


def test_psql_sees_the_installed_function(world, pg_bin):
    import subprocess

    with world.connect() as conn:
        conn.execute(
            "create or replace function digit_proxy(pixels real[]) returns real language onnx "
            "as 'digits_logreg.onnx', "
            '\'{"output": {"output": "probabilities", "post": {"op": "index", "index": 7}}}\''
        )
    out = subprocess.run(
        [str(pg_bin / "psql"), "-X", world.server.dsn(), "-c", r"\df digit_proxy"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "digit_proxy" in out and "real" in out and "pixels real[]" in out


def test_table_function_with_post_ops_through_lateral(world):
    with world.connect() as conn:
        conn.execute(
            "create function digit_scores(pixels real[]) returns table (label bigint, confidence real, "
            "probabilities real[]) language onnx as 'digits_mlp.onnx', "
            '\'{"outputs": {"confidence": {"output": "probabilities", "post": "max"}}}\''
        )
        rows = conn.execute(
            "select d.id, s.label, s.confidence, s.probabilities from digits d, "
            "lateral digit_scores(d.pixels) s where d.id between 200 and 259 order by d.id"
        ).fetchall()
    out = direct_run(world.mlp_path, {"X": world.digits.x[200:260]})
    assert [r[1] for r in rows] == out["label"].tolist()
    np.testing.assert_allclose([r[2] for r in rows], out["probabilities"].max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(np.array([r[3] for r in rows]), out["probabilities"], rtol=1e-6)


def test_image_model_over_png_bytea(world):
    with world.connect() as conn:
        conn.execute(
            "create function digit_from_png(image bytea) returns bigint language onnx "
            'as \'image_mlp.onnx\', \'{"image": {"decode": "image", "mode": "L", '
            '"scale": 0.00392156862745098, "layout": "NCHW"}, "output": "label"}\''
        )
        rows = conn.execute(
            "select id, digit_from_png(image) from digits where id % 10 = 3 order by id"
        ).fetchall()
    ids = [r[0] for r in rows]
    pixels = np.round(world.digits.x[ids] * 255) / 255
    expected = direct_run(world.image_path, {"image": pixels.reshape(-1, 1, 8, 8).astype(np.float32)})
    assert [r[1] for r in rows] == expected["label"].tolist()
    with world.connect() as conn:  # the image as a bound (binary) parameter, no table
        got = [conn.execute("select digit_from_png(%s)", (world.digits.png[i],)).fetchone()[0] for i in ids]
    assert got == expected["label"].tolist()


def test_extended_protocol_and_parameters(world):
    with world.connect() as conn:
        for low in (300, 310, 320, 330, 340, 350, 360):
            got = conn.execute(
                "select id, digit_oracle(pixels) from digits where id >= %s and id < %s order by id",
                (low, low + 10),
                prepare=True,
            ).fetchall()
            expected = direct_run(world.mlp_path, {"X": world.digits.x[low : low + 10]})["label"]
            assert [g[1] for g in got] == expected.tolist()


@pytest.mark.parametrize(
    ("ddl", "sqlstate", "words"),
    [
        (
            "create function bad_arg(pixels text) returns int language onnx as 'digits_mlp.onnx', "
            '\'{"output": "label"}\'',
            "42P13",
            ['argument "pixels" of type text', '"X"', "string tensor"],
        ),
        (
            "create function bad_out(pixels real[]) returns int language onnx as 'digits_mlp.onnx', "
            '\'{"output": "scores"}\'',
            "42P13",
            ['"scores"', "label", "probabilities"],
        ),
        (
            "create function bad_file(pixels real[]) returns int language onnx as 'not_a_model.onnx'",
            "42P13",
            ["not_a_model.onnx", "not a loadable ONNX model"],
        ),
        (
            "create function no_file(pixels real[]) returns int language onnx as 'missing.onnx'",
            "58P01",
            ["missing.onnx"],
        ),
        (
            "create function two_outputs(pixels real[]) returns int language onnx as 'digits_mlp.onnx'",
            "42P13",
            ["2 outputs", "label, probabilities"],
        ),
        (
            "create function bad_col(pixels real[]) returns table (label text, p bool) language onnx "
            "as 'digits_mlp.onnx'",
            "42P13",
            ['column "p"'],
        ),
    ],
)
def test_bad_definitions_are_clear_errors_and_change_nothing(world, ddl, sqlstate, words):
    with world.connect() as conn:
        before = conn.execute("select count(*) from sieve.models").fetchone()[0]
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(ddl)
        assert caught.value.sqlstate == sqlstate
        for word in words:
            assert word in str(caught.value)
        assert conn.execute("select count(*) from sieve.models").fetchone()[0] == before
        assert conn.execute("select 1").fetchone() == (1,)


def test_errors_inside_a_transaction_abort_it_like_postgres(world):
    with world.connect() as conn:
        conn.autocommit = False
        conn.execute("select 1")
        with pytest.raises(psycopg.Error):
            conn.execute("create function nope(pixels real[]) returns int language onnx as 'missing.onnx'")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        assert conn.execute("select 2").fetchone() == (2,)


def test_replace_with_another_file_recomputes(world):
    with world.connect() as conn:
        conn.execute(
            "create function swap_me(pixels real[]) returns bigint language onnx "
            "as 'digits_mlp.onnx', '{\"output\": \"label\"}'"
        )
        first = conn.execute("select id, swap_me(pixels) from digits where id < 40 order by id").fetchall()
        conn.execute(
            "create or replace function swap_me(pixels real[]) returns bigint language onnx "
            "as 'digits_logreg.onnx', '{\"output\": \"label\"}'"
        )
        version = conn.execute("select version from sieve.models where name = 'swap_me'").fetchone()[0]
        second = conn.execute("select id, swap_me(pixels) from digits where id < 40 order by id").fetchall()
    assert version == 2
    assert [r[1] for r in first] == direct_run(world.mlp_path, {"X": world.digits.x[:40]})["label"].tolist()
    assert [r[1] for r in second] == direct_run(world.logreg_path, {"X": world.digits.x[:40]})[
        "label"
    ].tolist()


def test_drop_function_removes_model_and_cache(world):
    with world.connect() as conn:
        conn.execute(
            "create function short_lived(pixels real[]) returns bigint language onnx "
            "as 'digits_mlp.onnx', '{\"output\": \"label\"}'"
        )
        conn.execute("select short_lived(pixels) from digits where id < 5")
        conn.execute("drop function short_lived")
        assert conn.execute("select count(*) from sieve.models where name = 'short_lived'").fetchone() == (0,)
        assert conn.execute("select to_regclass('sieve_cache.short_lived_v1')").fetchone() == (None,)
        with pytest.raises(psycopg.errors.UndefinedFunction):
            conn.execute("select short_lived(pixels) from digits where id < 5")
