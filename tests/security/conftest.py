"""A SieveDB server over a models dir with files inside and outside it, and digits loaded."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.inference.models import Digits, digits_mlp, image_mlp, load_digits_data, wide_mlp
from tests.support.model_files import bytes_echo, heavy_model
from tests.support.servers import PlainPostgres, SieveProcess

MAX_MODEL_BYTES = 256 << 20
HEAVY_MB = 200  # under the cap, over inference.signature.IN_PROCESS_MAX_BYTES


@dataclass
class Lab:
    server: SieveProcess
    models_dir: Path
    outside_dir: Path
    digits: Digits
    mlp_path: Path
    image_path: Path
    echo_path: Path
    max_model_bytes: int = MAX_MODEL_BYTES

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(), autocommit=True, **kwargs)


def load_digits_table(conn, digits: Digits) -> None:
    conn.execute("create table digits (id int primary key, pixels real[], image bytea, label int)")
    with conn.cursor().copy("copy digits (id, pixels, image, label) from stdin") as copy:
        for i, (row, png, label) in enumerate(zip(digits.x, digits.png, digits.y, strict=True)):
            copy.write_row((i, row.tolist(), png, int(label)))


@pytest.fixture(scope="package")
def lab(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("security")
    models_dir, outside = root / "models", root / "outside"
    models_dir.mkdir()
    outside.mkdir()
    digits = load_digits_data()
    clf, mlp = digits_mlp(digits, models_dir)
    image = image_mlp(clf, models_dir)
    echo = bytes_echo(models_dir / "bytes_echo.onnx")
    wide_mlp(models_dir, width=1024)
    heavy_model(models_dir / "heavy.onnx", HEAVY_MB)
    shutil.copy(mlp, outside / "secret.onnx")  # a loadable model the server must not open
    os.symlink(outside / "secret.onnx", models_dir / "link_out.onnx")
    os.symlink(mlp, models_dir / "link_in.onnx")
    with open(models_dir / "huge.onnx", "wb") as f:  # sparse: reading it whole would take long
        f.truncate(16 << 30)
    server = SieveProcess(
        data_dir=root / "server" / "data",
        extra_args=[
            "--models-dir",
            str(models_dir),
            "--inference-workers",
            "1",
            "--max-model-bytes",
            str(MAX_MODEL_BYTES),
        ],
    ).start()
    lab = Lab(server, models_dir, outside, digits, mlp, image, echo)
    with lab.connect() as conn:
        load_digits_table(conn, digits)
    yield lab
    server.stop()


@dataclass
class Pair:
    """Two SieveDB servers sharing one Postgres."""

    postgres: PlainPostgres
    servers: list[SieveProcess]
    models_dir: Path
    digits: Digits

    def connect(self, which: int) -> psycopg.Connection:
        return psycopg.connect(self.servers[which].dsn(password=self.postgres.password), autocommit=True)


@pytest.fixture(scope="package")
def pair(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pair")
    models_dir = root / "models"
    models_dir.mkdir()
    digits = load_digits_data()
    wide_mlp(models_dir, width=1024)
    postgres = PlainPostgres(data_dir=root / "pg").start()
    servers = []
    try:
        for i in range(2):
            servers.append(
                SieveProcess(
                    data_dir=root / f"server{i}" / "data",
                    extra_args=[
                        "--postgres-dsn",
                        postgres.dsn(),
                        "--models-dir",
                        str(models_dir),
                        "--inference-workers",
                        "1",
                    ],
                ).start()
            )
        pair = Pair(postgres, servers, models_dir, digits)
        with pair.connect(0) as conn:
            load_digits_table(conn, digits)
        yield pair
    finally:
        for server in servers:
            server.stop()
        postgres.stop()
