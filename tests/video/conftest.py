"""One SieveDB server with the synthetic video-analytics world for the package's tests."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest

from tests.support.servers import SieveProcess
from tests.support.video import VideoWorld, build_world, install

N_FRAMES = 1000
SEED = 2060  # frames 270 and 271 have three objects each, frame 272 none


@dataclass
class Video:
    server: SieveProcess
    world: VideoWorld

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(), autocommit=True, prepare_threshold=None, **kwargs)


@pytest.fixture(scope="package")
def video(tmp_path_factory: pytest.TempPathFactory):
    models_dir = tmp_path_factory.mktemp("video-models")
    world = build_world(models_dir, n_frames=N_FRAMES, seed=SEED)
    server = SieveProcess(
        data_dir=tmp_path_factory.mktemp("video-server") / "data",
        extra_args=["--models-dir", str(models_dir), "--inference-workers", "1"],
    ).start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            install(conn, world)
        yield Video(server, world)
    finally:
        server.stop()
