"""One in-process SieveDB server for the observability tests: the digits oracle and proxy, a
slow wide MLP over a larger table (to catch statements in flight), and a non-superuser role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import psycopg
import pytest

from tests.inference.models import digits_logreg, digits_mlp, load_digits_data, wide_mlp
from tests.observe.live import LiveServer
from tests.support.model_files import DIGIT_ORACLE_DDL, DIGIT_PROXY_P7_DDL

WIDE_ROWS = 12288  # three batches of the planner's 4,096 inputs
WIDE_WIDTH = 768


@dataclass
class Observed:
    live: LiveServer

    def connect(self, user: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.live.dsn(user), autocommit=True)

    def slow_function(self, name: str) -> str:
        """A new model over the wide MLP (a new cache: every input runs again)."""
        with self.connect() as conn:
            conn.execute(
                f"create function {name}(x real[]) returns bigint language onnx "
                "as 'wide_mlp.onnx', '{\"output\": \"label\"}'"
            )
            conn.execute(f"grant execute on function {name}(real[]) to alice")
        return name


@pytest.fixture(scope="package")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    models_dir = tmp_path_factory.mktemp("observe-models")
    digits = load_digits_data()
    digits_mlp(digits, models_dir)
    digits_logreg(digits, models_dir)
    wide_mlp(models_dir, width=WIDE_WIDTH)
    live = LiveServer(tmp_path_factory.mktemp("observe-server") / "data", models_dir).start()
    world = Observed(live)
    with world.connect() as conn:
        conn.execute("create role alice login")
        conn.execute("create table digits (id int primary key, pixels real[], label int)")
        with conn.cursor().copy("copy digits (id, pixels, label) from stdin") as copy:
            for i, (row, label) in enumerate(zip(digits.x, digits.y, strict=True)):
                copy.write_row((i, row.tolist(), int(label)))
        rng = np.random.default_rng(0)
        conn.execute("create table wide_in (id int primary key, x real[])")
        with conn.cursor().copy("copy wide_in (id, x) from stdin") as copy:
            for i, row in enumerate(rng.standard_normal((WIDE_ROWS, 64)).astype(np.float32)):
                copy.write_row((i, row.tolist()))
        conn.execute("grant select on digits, wide_in to alice")
        conn.execute(DIGIT_ORACLE_DDL)
        conn.execute(DIGIT_PROXY_P7_DDL)
    yield world
    live.stop()
