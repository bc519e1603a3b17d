"""Helpers for the real-client tests: every client connects to the session's SieveDB port."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.support.servers import SieveProcess


def client_env(server: SieveProcess) -> dict[str, str]:
    """An environment for libpq programs that points at SieveDB and nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PGHOST=server.host,
        PGPORT=str(server.port),
        PGUSER="postgres",
        PGDATABASE="postgres",
        PGCONNECT_TIMEOUT="10",
        PGSSLMODE="prefer",  # psql sends an SSLRequest first; SieveDB answers it
        LC_ALL="C.UTF-8",
        LANG="C.UTF-8",
        PSQLRC=os.devnull,
    )
    return env


@pytest.fixture(scope="session")
def libpq_env(sieve_server: SieveProcess) -> dict[str, str]:
    """Environment for libpq command-line programs (psql, pgbench) aimed at the session server."""
    return client_env(sieve_server)


@pytest.fixture()
def unique_name() -> Callable[[str], str]:
    """``unique_name("t")`` -> ``t_<hex>``: the session server is shared, names must not collide."""
    return lambda prefix: f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def psql(sieve_server: SieveProcess, pg_bin: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run PostgreSQL 18's psql against SieveDB: ``psql("-c", "select 1")``."""
    env = client_env(sieve_server)

    def run(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [
            str(pg_bin / "psql"),
            "-X",
            "-h",
            sieve_server.host,
            "-p",
            str(sieve_server.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            *args,
        ]
        return subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, timeout=timeout)

    return run


@pytest.fixture()
def sql(sieve_server: SieveProcess) -> Callable[..., list[tuple]]:
    """Run one statement through SieveDB (psycopg, autocommit) and return its rows, if any."""

    def run(query: str, params: tuple | None = None, database: str = "postgres") -> list[tuple]:
        with psycopg.connect(sieve_server.dsn(database=database), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    return run
