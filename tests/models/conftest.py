"""A SieveDB server with real models in its models dir and scikit-learn's digits loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest

from tests.inference.models import Digits, digits_logreg, digits_mlp, image_mlp, load_digits_data
from tests.support.servers import SieveProcess


@dataclass
class ModelWorld:
    server: SieveProcess
    models_dir: Path
    digits: Digits
    mlp_path: Path
    logreg_path: Path
    image_path: Path

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(), autocommit=True, **kwargs)


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory):
    models_dir = tmp_path_factory.mktemp("models")
    digits = load_digits_data()
    clf, mlp = digits_mlp(digits, models_dir)
    _, _, logreg = digits_logreg(digits, models_dir)
    image = image_mlp(clf, models_dir)
    (models_dir / "not_a_model.onnx").write_bytes(b"this is not protobuf at all" * 10)
    server = SieveProcess(
        data_dir=tmp_path_factory.mktemp("models-server") / "data",
        extra_args=["--models-dir", str(models_dir), "--inference-workers", "1"],
    ).start()
    world = ModelWorld(server, models_dir, digits, mlp, logreg, image)
    with world.connect() as conn:
        conn.execute("create table digits (id int primary key, pixels real[], image bytea, label int)")
        with conn.cursor().copy("copy digits (id, pixels, image, label) from stdin") as copy:
            for i, (row, png, label) in enumerate(zip(digits.x, digits.png, digits.y, strict=True)):
                copy.write_row((i, row.tolist(), png, int(label)))
    yield world
    server.stop()


def label_function(conn, name: str, model_file: str = "digits_mlp.onnx", returns: str = "int") -> None:
    """(Re)create ``name(pixels real[])`` returning the model's ``label`` output."""
    conn.execute(
        f"create or replace function {name}(pixels real[]) returns {returns} language onnx "
        f"as '{model_file}', '{{\"output\": \"label\"}}'"
    )


def label_view(conn, view: str, function: str) -> None:
    """(Re)create ``view`` as (id, digit) over digits through ``function``."""
    conn.execute(f"create or replace view {view} as select d.id, {function}(d.pixels) as digit from digits d")


def direct_run(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))
