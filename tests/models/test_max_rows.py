"""A table-returning model's bound on the rows one input may give ("max_rows"): declared in the
function's options or read off a fixed first dimension of its row-index output, kept in
``sieve.models`` across restarts, and enforced where the outputs become rows: an input over the
bound fails the statement (21000) and nothing of its batch is cached."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import psycopg
import pytest
from onnx import TensorProto, helper, numpy_helper

from planner.model_spec import ModelSpec
from tests.inference.models import OPSET, save
from tests.support.model_files import cache_table

SLOTS = 4
HIT = 0.5  # a slot whose value is over this gives a row


def slot_detector(path: Path, rows_dim: int | str = "M") -> Path:
    """x [N, SLOTS] -> one row per slot over HIT: ``row`` (the input: the row-index column),
    ``slot`` and ``score`` = x[row, slot]. ``rows_dim`` is what the file says of the first
    dimension of ``row`` (a fixed number need not be true: ONNX Runtime does not check it)."""
    nodes = [
        helper.make_node("Constant", [], ["hit"], value=numpy_helper.from_array(np.array(HIT, np.float32))),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1, np.int64))),
        helper.make_node("Greater", ["x", "hit"], ["over"]),
        helper.make_node("NonZero", ["over"], ["nz"]),  # [2, M]: (input, slot) of each hit, row-major
        helper.make_node("Transpose", ["nz"], ["pairs"], perm=[1, 0]),
        helper.make_node("GatherND", ["x", "pairs"], ["score"]),
        helper.make_node("Gather", ["nz", "zero"], ["row"], axis=0),
        helper.make_node("Gather", ["nz", "one"], ["slot"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "slot_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SLOTS])],
        [
            helper.make_tensor_value_info("row", TensorProto.INT64, [rows_dim]),
            helper.make_tensor_value_info("slot", TensorProto.INT64, ["M"]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["M"]),
        ],
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def _slot_values(hits: list[int], rng: np.random.Generator) -> np.ndarray:
    """One row of SLOTS values per entry of ``hits``, that many of them over HIT."""
    x = rng.uniform(0.0, HIT - 0.05, size=(len(hits), SLOTS)).astype(np.float32)
    for i, k in enumerate(hits):
        x[i, rng.choice(SLOTS, size=k, replace=False)] = rng.uniform(HIT + 0.05, 1.0, size=k)
    return x


@pytest.fixture(scope="module")
def slots(world):
    """Model files (a dynamic and a fixed row dimension) and two tables: ``slots_ok`` (at most
    two hits an input) and ``slots_bad`` (the same, and a few inputs with three or four)."""
    slot_detector(world.models_dir / "slot_detector.onnx")
    slot_detector(world.models_dir / "slot_detector_fixed3.onnx", rows_dim=3)
    rng = np.random.default_rng(31)
    ok = _slot_values(rng.integers(0, 3, size=60).tolist(), rng)
    bad = _slot_values([*rng.integers(0, 3, size=40).tolist(), 3, 4, 3], rng)
    with world.connect() as conn:
        for table, x in (("slots_ok", ok), ("slots_bad", bad)):
            conn.execute(f"create table {table} (id int primary key, x real[])")
            with conn.cursor().copy(f"copy {table} (id, x) from stdin") as copy:
                for i, row in enumerate(x):
                    copy.write_row((i, row.tolist()))
    return {"slots_ok": ok, "slots_bad": bad}


def _detector(conn, name: str, options: dict, file: str = "slot_detector.onnx") -> None:
    options = {"rows": "row_index", "outputs": {"row_in": "row"}, **options}
    conn.execute(
        f"create or replace function {name}(x real[]) returns table (row_in bigint, slot bigint, score real) "
        f"language onnx as '{file}', '{json.dumps(options)}'"
    )


def _catalog(conn, name: str) -> tuple:
    """(declared option, the bound SieveDB keeps) from sieve.models."""
    return conn.execute(
        "select options->'max_rows', signature->'max_rows' from sieve.models where name = %s", (name,)
    ).fetchone()


def _rows(conn, function: str, table: str) -> list[tuple]:
    return conn.execute(
        f"select t.id, d.slot, d.score from {table} t, lateral {function}(t.x) d order by t.id, d.slot"
    ).fetchall()


def _expected(x: np.ndarray) -> list[tuple]:
    return [(i, j, float(x[i, j])) for i in range(len(x)) for j in range(SLOTS) if x[i, j] > HIT]


# -- where the bound comes from ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "options", "declared", "bound"),
    [
        ("slot_detector.onnx", {"max_rows": 2}, 2, 2),
        ("slot_detector.onnx", {}, None, None),  # a dynamic row dimension and no option: unbounded
        ("slot_detector_fixed3.onnx", {}, None, 3),  # read off the file's fixed first dimension
        ("slot_detector_fixed3.onnx", {"max_rows": 5}, 5, 3),  # both hold: the smaller one
        ("slot_detector_fixed3.onnx", {"max_rows": 2}, 2, 2),
    ],
)
def test_the_bound_is_the_declared_option_or_the_fixed_row_dimension(
    world, slots, file, options, declared, bound
):
    with world.connect() as conn:
        _detector(conn, "mr_source", options, file)
        assert _catalog(conn, "mr_source") == (declared, bound)


def test_functions_that_give_one_row_per_input_have_a_bound_of_one(world):
    with world.connect() as conn:
        conn.execute(
            "create function mr_scalar(pixels real[]) returns int language onnx "
            "as 'digits_mlp.onnx', '{\"output\": \"label\"}'"
        )
        conn.execute(
            "create function mr_table(pixels real[]) returns table (label bigint) language onnx "
            "as 'digits_mlp.onnx', '{\"max_rows\": 7}'"
        )
        assert _catalog(conn, "mr_scalar") == (None, 1)
        assert _catalog(conn, "mr_table") == (7, 1)


@pytest.mark.parametrize(
    ("options", "words", "hint"),
    [
        ('{"max_rows": 0}', ['"max_rows"', "whole number", "not 0"], None),
        ('{"max_rows": -3}', ['"max_rows"', "not -3"], None),
        ('{"max_rows": 2.5}', ['"max_rows"', "not 2.5"], None),
        ('{"max_rows": "3"}', ['"max_rows"', 'not "3"'], None),
        ('{"max_rows": true}', ['"max_rows"', "not true"], None),
        ('{"max_rows": 2147483648}', ['"max_rows"', "2147483647"], None),
        ('{"max_row": 3}', ['unknown model option "max_row"'], 'did you mean "max_rows"?'),
        ('{"maxRows": 3}', ['unknown model option "maxRows"'], 'did you mean "max_rows"?'),
    ],
)
def test_bad_bounds_are_refused_with_22023(world, slots, options, words, hint):
    with world.connect() as conn, pytest.raises(psycopg.Error) as caught:
        _detector(conn, "mr_bad", json.loads(options))
    assert caught.value.sqlstate == "22023"
    for word in words:
        assert word in caught.value.diag.message_primary
    if hint is not None:
        assert caught.value.diag.message_hint == hint
    with world.connect() as conn:
        assert conn.execute("select count(*) from sieve.models where name = 'mr_bad'").fetchone()[0] == 0


def test_a_function_returning_one_value_refuses_the_option(world):
    with world.connect() as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute(
            "create function mr_scalar_bound(pixels real[]) returns int language onnx "
            'as \'digits_mlp.onnx\', \'{"output": "label", "max_rows": 1}\''
        )
    assert caught.value.sqlstate == "22023"
    assert "TABLE functions" in caught.value.diag.message_primary


# -- enforcement ----------------------------------------------------------------------------------


def test_inputs_within_the_bound_give_all_their_rows(world, slots):
    with world.connect() as conn:
        _detector(conn, "mr_within", {"max_rows": 2})
        rows = _rows(conn, "mr_within", "slots_ok")
    expected = _expected(slots["slots_ok"])
    assert max(np.bincount([r[0] for r in expected])) == 2  # the bound is reached, not just kept
    assert [r[:2] for r in rows] == [e[:2] for e in expected]
    np.testing.assert_allclose([r[2] for r in rows], [e[2] for e in expected], rtol=1e-6)


def test_an_input_over_the_bound_fails_the_statement_and_its_batch_is_not_cached(world, slots):
    with world.connect() as conn:
        _detector(conn, "mr_over", {"max_rows": 2})
        with pytest.raises(psycopg.Error) as caught:
            _rows(conn, "mr_over", "slots_bad")
        error = caught.value
        assert error.sqlstate == "21000"
        primary = error.diag.message_primary
        assert re.match(r"model mr_over gave [34] rows for input [0-9a-f]{64}, over its bound of 2 ", primary)
        assert "3 of the batch's 43 inputs" in error.diag.message_detail
        assert '"max_rows"' in error.diag.message_hint
        # one batch held all 43 inputs: the 40 within the bound were not cached either
        assert conn.execute(f"select count(*) from {cache_table(conn, 'mr_over')}").fetchone()[0] == 0
        # the same inputs, without those over the bound, run and are cached
        rows = conn.execute(
            "select t.id, d.slot from slots_bad t, lateral mr_over(t.x) d where t.id < 40 order by 1, 2"
        ).fetchall()
        assert rows == [e[:2] for e in _expected(slots["slots_bad"][:40])]
        cached = f"select count(distinct digest) from {cache_table(conn, 'mr_over')}"
        assert conn.execute(cached).fetchone()[0] == 40


def test_a_raised_bound_lets_the_same_inputs_through(world, slots):
    with world.connect() as conn:
        _detector(conn, "mr_raised", {"max_rows": 2})
        with pytest.raises(psycopg.Error):
            _rows(conn, "mr_raised", "slots_bad")
        _detector(conn, "mr_raised", {"max_rows": SLOTS})
        rows = _rows(conn, "mr_raised", "slots_bad")
    assert [r[:2] for r in rows] == [e[:2] for e in _expected(slots["slots_bad"])]


def test_a_file_wrong_about_its_fixed_row_dimension_is_caught(world, slots):
    """Three rows at most, says the file; an input with four fails the statement all the same."""
    with world.connect() as conn:
        _detector(conn, "mr_fixed", {}, "slot_detector_fixed3.onnx")
        with pytest.raises(psycopg.Error) as caught:
            _rows(conn, "mr_fixed", "slots_bad")
        assert caught.value.sqlstate == "21000"
        assert "gave 4 rows" in caught.value.diag.message_primary
        assert "bound of 3" in caught.value.diag.message_primary
        assert "wrong about its shape" in caught.value.diag.message_hint
        assert conn.execute(f"select count(*) from {cache_table(conn, 'mr_fixed')}").fetchone()[0] == 0


# -- the catalog --------------------------------------------------------------------------------


def test_the_bound_survives_a_restart_and_is_still_enforced(world, slots):
    with world.connect() as conn:
        _detector(conn, "mr_restart", {"max_rows": 2})
        _detector(conn, "mr_restart_fixed", {}, "slot_detector_fixed3.onnx")
    world.server.stop()
    world.server.start()
    with world.connect() as conn:
        assert _catalog(conn, "mr_restart") == (2, 2)
        assert _catalog(conn, "mr_restart_fixed") == (None, 3)
        with pytest.raises(psycopg.Error) as caught:
            _rows(conn, "mr_restart", "slots_bad")
        assert caught.value.sqlstate == "21000" and "bound of 2" in caught.value.diag.message_primary
        assert len(_rows(conn, "mr_restart", "slots_ok")) == len(_expected(slots["slots_ok"]))


def test_catalog_rows_written_before_the_bound_existed_derive_it_again(world, slots):
    """A sieve.models row whose definition lacks "max_rows" reads back as CREATE FUNCTION now
    derives it (ModelSpec.from_row, as the planner reads the catalog)."""
    with world.connect() as conn:
        _detector(conn, "mr_old", {"max_rows": 2})
        _detector(conn, "mr_old_fixed", {}, "slot_detector_fixed3.onnx")
        _detector(conn, "mr_old_free", {})
        rows = conn.execute(
            "select id, name, path, content_hash, version, signature - 'max_rows' as signature, options "
            "from sieve.models where name like 'mr_old%' order by name"
        ).fetchall()
    names = ["id", "name", "path", "content_hash", "version", "signature", "options"]
    specs = [ModelSpec.from_row(dict(zip(names, row, strict=True))) for row in rows]
    assert [(s.name, s.max_rows) for s in specs] == [
        ("mr_old", 2),
        ("mr_old_fixed", 3),
        ("mr_old_free", None),
    ]
