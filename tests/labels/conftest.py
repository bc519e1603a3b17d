"""A SieveDB server with scikit-learn's digits (pixels, true label), a small table of photos, the
logistic-regression proxy, and roles: alice may run the labels functions the tests grant her,
bob may not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.inference.models import Digits, digits_logreg, load_digits_data
from tests.support.model_files import DIGIT_PROXY_P7_DDL
from tests.support.servers import SieveProcess, free_port

PHOTOS = 12


@dataclass
class LabelsWorld:
    server: SieveProcess
    digits: Digits
    http_port: int

    def connect(self, user: str = "postgres", **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(user=user), autocommit=True, **kwargs)

    @property
    def backing_socket_dir(self) -> Path:
        """The embedded Postgres's socket directory (trusted while it has no password)."""
        return self.server.data_dir / "pg"


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory):
    models_dir = tmp_path_factory.mktemp("labels-models")
    digits = load_digits_data()
    digits_logreg(digits, models_dir)
    http_port = free_port()
    server = SieveProcess(
        data_dir=tmp_path_factory.mktemp("labels-server") / "data",
        extra_args=[
            "--models-dir",
            str(models_dir),
            "--inference-workers",
            "1",
            "--http-port",
            str(http_port),
        ],
    ).start()
    world = LabelsWorld(server, digits, http_port)
    with world.connect() as conn:
        conn.execute("create table digits (id int primary key, pixels real[], label int)")
        with conn.cursor().copy("copy digits (id, pixels, label) from stdin") as copy:
            for i, (row, label) in enumerate(zip(digits.x, digits.y, strict=True)):
                copy.write_row((i, row.tolist(), int(label)))
        conn.execute(DIGIT_PROXY_P7_DDL)
        conn.execute("create table photos (id int primary key, image bytea, caption text)")
        conn.execute(
            "insert into photos select g, decode(lpad(to_hex(g), 8, '0'), 'hex'), 'photo ' || g "
            f"from generate_series(1, {PHOTOS}) g"
        )
        for role in ("alice", "bob"):
            conn.execute(f"create role {role} login")
        conn.execute("grant select on photos, digits to alice, bob")
    yield world
    server.stop()
