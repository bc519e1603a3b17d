"""A SieveDB server with the digits MLP (oracle) and logistic regression (proxy), digits loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.inference.models import Digits, digits_logreg, digits_mlp, load_digits_data
from tests.support.model_files import DIGIT_ORACLE_DDL, DIGIT_PROXY_P7_DDL
from tests.support.servers import SieveProcess


@dataclass
class ApproxWorld:
    server: SieveProcess
    models_dir: Path
    digits: Digits
    mlp_path: Path

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(), autocommit=True, **kwargs)


@pytest.fixture(scope="package")
def approx_world(tmp_path_factory: pytest.TempPathFactory):
    models_dir = tmp_path_factory.mktemp("approx-models")
    digits = load_digits_data()
    _, mlp = digits_mlp(digits, models_dir)
    digits_logreg(digits, models_dir)
    server = SieveProcess(
        data_dir=tmp_path_factory.mktemp("approx-server") / "data",
        extra_args=["--models-dir", str(models_dir), "--inference-workers", "1"],
    ).start()
    world = ApproxWorld(server, models_dir, digits, mlp)
    with world.connect() as conn:
        conn.execute("create table digits (id int primary key, pixels real[], label int, score real)")
        with conn.cursor().copy("copy digits (id, pixels, label, score) from stdin") as copy:
            for i, (row, label) in enumerate(zip(digits.x, digits.y, strict=True)):
                copy.write_row((i, row.tolist(), int(label), float(row.mean())))
        conn.execute(DIGIT_ORACLE_DDL)
        conn.execute(DIGIT_PROXY_P7_DDL)
    yield world
    server.stop()
