"""Model definitions are checked against the ONNX signature in full: an output that does not fit
the declared type, an option nobody reads, or arguments that half match the model's input names
are errors at CREATE FUNCTION, never a function that silently computes something else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
import pytest
from onnx import TensorProto, helper

from tests.inference.models import OPSET, save


def _minus(path: Path, first: str, second: str) -> Path:
    """Inputs (``first``, ``second``), both float [N]; output ``d`` = first - second."""
    graph = helper.make_graph(
        [helper.make_node("Sub", [first, second], ["d"])],
        "minus",
        [
            helper.make_tensor_value_info(first, TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info(second, TensorProto.FLOAT, ["N"]),
        ],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, ["N"])],
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


@pytest.fixture(scope="module")
def pairs(world):
    """Model files a - b (inputs named a, b) and input_0 - input_1, and a table of (a, b) rows."""
    _minus(world.models_dir / "a_minus_b.onnx", "a", "b")
    _minus(world.models_dir / "first_minus_second.onnx", "input_0", "input_1")
    rng = np.random.default_rng(10)
    values = rng.normal(size=(40, 2)).astype(np.float32)
    with world.connect() as conn:
        conn.execute("create table pairs (id int primary key, a real, b real)")
        with conn.cursor().copy("copy pairs (id, a, b) from stdin") as copy:
            for i, (a, b) in enumerate(values):
                copy.write_row((i, float(a), float(b)))
    return values


def _fails(world, ddl: str) -> psycopg.Error:
    with world.connect() as conn:
        before = conn.execute("select count(*) from sieve.models").fetchone()[0]
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(ddl)
        assert conn.execute("select count(*) from sieve.models").fetchone()[0] == before
    return caught.value


def _create(name: str, returns: str, options: str, args: str = "pixels real[]") -> str:
    return f"create function {name}({args}) returns {returns} language onnx as 'digits_mlp.onnx', '{options}'"


@pytest.mark.parametrize(
    ("ddl", "sqlstate", "words", "hint_words"),
    [
        (
            _create("p_wide", "real", '{"output": "probabilities"}'),
            "42P13",
            ["p_wide", '"probabilities"', "[N,10]", "real", "10 values per row"],
            ['"post"', '"max"', '"argmax"', '"index"', "real[]"],
        ),
        (
            _create(
                "t_wide",
                "table (digit bigint, score real)",
                '{"outputs": {"digit": "label", "score": "probabilities"}}',
            ),
            "42P13",
            ['column "score"', '"probabilities"', "[N,10]"],
            ['{"outputs": {"score": {"output": "probabilities", "post": ["max"]}}}'],
        ),
        (
            _create("p_top_post", "int", '{"output": "probabilities", "post": ["argmax"]}'),
            "22023",
            ['"post"', "inside an output binding"],
            ['{"output": {"output": "probabilities", "post": ["argmax"]}}'],
        ),
        (
            _create("p_typo", "int", '{"ouptut": "label"}'),
            "22023",
            ['unknown model option "ouptut"', '"output"', '"outputs"', '"rows"', '"pixels"'],
            ['did you mean "output"?'],
        ),
        (
            _create("t_output", "table (label bigint)", '{"output": "label"}'),
            "22023",
            ['unknown model option "output"', '"outputs"'],
            ['did you mean "outputs"?'],
        ),
        (
            _create("t_column_typo", "table (label bigint, score real)", '{"outputs": {"scroe": "label"}}'),
            "22023",
            ['unknown key "scroe" in "outputs"'],
            ['did you mean "score"?'],
        ),
        (
            _create("p_binding_typo", "real", '{"output": {"outptu": "probabilities", "post": "max"}}'),
            "22023",
            ['unknown key "outptu"'],
            ['did you mean "output"?'],
        ),
        (
            _create(
                "p_index_range",
                "real",
                '{"output": {"output": "probabilities", "post": {"op": "index", "index": 10}}}',
            ),
            "42P13",
            ["out of range", "10 values per row"],
            [],
        ),
        (
            _create("p_max_of_label", "real", '{"output": {"output": "label", "post": "max"}}'),
            "42P13",
            ['"max"', "[N]"],
            [],
        ),
        (  # a binding object with no "post" (was a KeyError: XX000)
            _create("p_binding_no_post", "real", '{"output": {"output": "probabilities"}}'),
            "42P13",
            ['"probabilities"'],
            ["post"],
        ),
        (
            _create("p_arg_opts", "int", '{"output": "label", "pixels": {"scale": 2}}'),
            "42P13",
            ['argument "pixels"', "decode"],
            [],
        ),
    ],
)
def test_definitions_that_would_compute_something_else_are_refused(world, ddl, sqlstate, words, hint_words):
    error = _fails(world, ddl)
    assert error.sqlstate == sqlstate
    for word in words:
        assert word in error.diag.message_primary
    for word in hint_words:
        assert word in (error.diag.message_hint or "")


def test_post_ops_that_pick_one_value_make_the_wide_output_fit(world):
    with world.connect() as conn:
        conn.execute(_create("p_class", "int", '{"output": {"output": "probabilities", "post": ["argmax"]}}'))
        conn.execute(_create("p_top", "real", '{"output": {"output": "probabilities", "post": "max"}}'))
        conn.execute(
            _create(
                "t_scores",
                "table (label bigint, p7 real)",
                '{"outputs": {"p7": {"output": "probabilities", "post": {"op": "index", "index": 7}}}}',
            )
        )
        rows = conn.execute(
            "select d.id, p_class(d.pixels), p_top(d.pixels), s.label, s.p7 "
            "from digits d, lateral t_scores(d.pixels) s where d.id < 30 order by d.id"
        ).fetchall()
    from tests.models.conftest import direct_run

    expected = direct_run(world.mlp_path, {"X": world.digits.x[:30]})
    probabilities = expected["probabilities"]
    assert [r[1] for r in rows] == probabilities.argmax(axis=1).tolist()
    np.testing.assert_allclose([r[2] for r in rows], probabilities.max(axis=1), rtol=1e-6)
    assert [r[3] for r in rows] == expected["label"].tolist()
    np.testing.assert_allclose([r[4] for r in rows], probabilities[:, 7], rtol=1e-6)


def test_arguments_bind_to_the_model_inputs_of_their_names_in_any_order(world, pairs):
    with world.connect() as conn:
        conn.execute("create function b_first(b real, a real) returns real language onnx as 'a_minus_b.onnx'")
        conn.execute("create function a_first(a real, b real) returns real language onnx as 'a_minus_b.onnx'")
        swapped = conn.execute("select b_first(b, a) from pairs order by id").fetchall()
        straight = conn.execute("select a_first(a, b) from pairs order by id").fetchall()
    expected = pairs[:, 0] - pairs[:, 1]
    np.testing.assert_allclose([r[0] for r in swapped], expected, rtol=1e-6)
    np.testing.assert_allclose([r[0] for r in straight], expected, rtol=1e-6)


def test_arguments_named_unlike_any_model_input_bind_by_position(world, pairs):
    with world.connect() as conn:
        conn.execute(
            "create function by_position(y real, x real) returns real language onnx "
            "as 'first_minus_second.onnx'"
        )
        rows = conn.execute("select by_position(a, b) from pairs order by id").fetchall()
    np.testing.assert_allclose([r[0] for r in rows], pairs[:, 0] - pairs[:, 1], rtol=1e-6)


def test_arguments_matching_some_model_input_names_but_not_all_are_refused(world, pairs):
    error = _fails(
        world, "create function half_named(a real, c real) returns real language onnx as 'a_minus_b.onnx'"
    )
    assert error.sqlstate == "42P13"
    assert "(a, c)" in error.diag.message_primary
    assert "a, b" in error.diag.message_primary
