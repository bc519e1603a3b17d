"""A SieveDB server with a real model function for the server tests that need the model path."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.inference.models import digits_mlp, load_digits_data

DIGIT_ROWS = 60


@pytest.fixture(scope="package")
def digits_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir holding digits_mlp.onnx (scikit-learn's digits, trained in a second or two)."""
    models_dir = tmp_path_factory.mktemp("server-models")
    digits_mlp(load_digits_data(), models_dir)
    return models_dir


def install_digits(conn: psycopg.Connection) -> None:
    """A table of DIGIT_ROWS digits and ``digit_oracle(pixels real[]) returns int``."""
    digits = load_digits_data()
    conn.execute("create table digits (id int primary key, pixels real[])")
    with conn.cursor().copy("copy digits (id, pixels) from stdin") as copy:
        for i, row in enumerate(digits.x[:DIGIT_ROWS]):
            copy.write_row((i, row.tolist()))
    conn.execute(
        "create function digit_oracle(pixels real[]) returns int language onnx "
        "as 'digits_mlp.onnx', '{\"output\": \"label\"}'"
    )
