"""Inputs a model cannot take are data errors that name the input, never NaN or a crash text."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import psycopg
import pytest

from tests.inference.models import png_bytes
from tests.support.model_files import direct_run


@pytest.fixture(scope="module")
def scored(lab):
    with lab.connect() as conn:
        conn.execute(
            "create or replace function p7(pixels real[]) returns real language onnx as 'digits_mlp.onnx', "
            """'{"output": {"output": "probabilities", "post": {"op": "index", "index": 7}}}'"""
        )
        conn.execute(
            "create or replace function image_digit(image bytea) returns int language onnx "
            """as 'image_mlp.onnx', '{"output": "label", "image": {"decode": "image", "mode": "L", """
            """"scale": "1/255"}}'"""
        )
    return lab


def test_a_null_element_is_refused_with_22004_not_read_as_nan(scored):
    pixels = scored.digits.x[5].tolist()
    with scored.connect() as conn:
        conn.execute("create table holes (id int, pixels real[])")
        holed = [*pixels[:10], None, *pixels[11:]]
        conn.execute("insert into holes values (1, %s), (2, %s)", (pixels, holed))
        with pytest.raises(psycopg.Error) as info:
            conn.execute("select id from holes where p7(pixels) > 2").fetchall()
        nan_row = [*pixels[:10], float("nan"), *pixels[11:]]
        conn.execute("insert into holes values (3, %s)", (nan_row,))
        nan_answer = conn.execute("select p7(pixels) from holes where id = 3").fetchone()[0]
    assert info.value.diag.sqlstate == "22004"
    message = info.value.diag.message_primary
    assert "pixels" in message and "p7" in message
    # a real NaN in the data stays allowed: the model's own answer for it
    feeds = {"X": np.array([nan_row], dtype=np.float32)}
    expected = direct_run(scored.mlp_path, feeds)["probabilities"][0, 7]
    assert (math.isnan(nan_answer) and math.isnan(expected)) or nan_answer == pytest.approx(expected)


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_an_undecodable_image_is_a_data_error_naming_the_input(scored, kind):
    good = png_bytes(scored.digits.x[3].reshape(8, 8))
    bad = b"definitely not an image" if kind == "garbage" else good[: len(good) // 2]
    table = f"images_{kind}"
    with scored.connect() as conn:
        conn.execute(f"create table {table} (id int, image bytea)")
        conn.execute(f"insert into {table} values (1, %s), (2, %s)", (good, bad))
        with pytest.raises(psycopg.Error) as info:
            conn.execute(f"select id, image_digit(image) from {table} order by id").fetchall()
        assert conn.execute(f"select image_digit(image) from {table} where id = 1").fetchone()[0] == 3
    diag = info.value.diag
    assert diag.sqlstate.startswith("22"), (diag.sqlstate, diag.message_primary)
    assert "image_digit" in diag.message_primary and hashlib.sha256(bad).hexdigest() in diag.message_primary
    assert " at 0x" not in diag.message_primary
