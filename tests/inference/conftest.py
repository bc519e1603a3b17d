"""Fixtures for the inference tests: real models (built once per session) and pools on uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from inference import InferencePool
from tests.inference import models


@dataclass(frozen=True)
class Zoo:
    digits: models.Digits
    logreg: object
    logreg_zipmap: Path
    logreg_plain: Path
    mlp: object
    mlp_path: Path
    image_mlp: Path
    row_index: Path
    text_path: Path
    texts: np.ndarray
    text_labels: np.ndarray


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    out = tmp_path_factory.mktemp("models")
    digits = models.load_digits_data()
    logreg, zipmap, plain = models.digits_logreg(digits, out)
    mlp, mlp_path = models.digits_mlp(digits, out)
    texts, labels = models.generated_sentences(300)
    return Zoo(
        digits=digits,
        logreg=logreg,
        logreg_zipmap=zipmap,
        logreg_plain=plain,
        mlp=mlp,
        mlp_path=mlp_path,
        image_mlp=models.image_mlp(mlp, out),
        row_index=models.row_index_model(out),
        text_path=models.text_pipeline(texts, labels, out / "text.onnx"),
        texts=texts,
        text_labels=labels,
    )


@pytest.fixture(scope="session")
def wide_mlp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.wide_mlp(tmp_path_factory.mktemp("wide"))


def new_loop() -> asyncio.AbstractEventLoop:
    # The server runs on uvloop; test on it too (add_reader on pipes and sentinels included).
    import uvloop

    return uvloop.new_event_loop()


class Runner:
    """One event loop kept across a module's tests, with a pool started on it."""

    def __init__(self, pool: InferencePool) -> None:
        self.loop = new_loop()
        self.pool = pool
        self.run(pool.start())

    def run(self, coro, timeout: float = 60.0):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def close(self) -> None:
        self.run(self.pool.close())
        self.loop.close()


@pytest.fixture(scope="module")
def runner() -> Iterator[Runner]:
    """A one-worker pool (the machine may have two cores only)."""
    r = Runner(InferencePool(workers=1, intra_op_threads=1, max_batch_rows=2048, max_wait_ms=5))
    yield r
    r.close()


def direct(path: Path, feeds: dict) -> list:
    """The reference: a bare ONNX Runtime session in this process."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, feeds)
