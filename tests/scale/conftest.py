"""Two SieveDB front-ends over one Postgres, with the digits loaded and two model files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.inference.models import digits_mlp, load_digits_data, wide_mlp
from tests.support.frontends import FrontEnds


def load_digits_table(conn: psycopg.Connection) -> None:
    digits = load_digits_data()
    conn.execute("create table digits (id int primary key, pixels real[], label int)")
    with conn.cursor().copy("copy digits (id, pixels, label) from stdin") as copy:
        for i, (row, label) in enumerate(zip(digits.x, digits.y, strict=True)):
            copy.write_row((i, row.tolist(), int(label)))


@pytest.fixture(scope="package")
def scale_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models_dir = tmp_path_factory.mktemp("scale-models")
    digits_mlp(load_digits_data(), models_dir)
    wide_mlp(models_dir, width=1024)
    return models_dir


@pytest.fixture(scope="package")
def frontends(tmp_path_factory: pytest.TempPathFactory, scale_models: Path) -> Iterator[FrontEnds]:
    args = ["--models-dir", str(scale_models), "--inference-workers", "1"]
    with FrontEnds(tmp_path_factory.mktemp("frontends"), extra_args=args) as started:
        with psycopg.connect(started.dsn(0), autocommit=True) as conn:
            load_digits_table(conn)
        yield started
