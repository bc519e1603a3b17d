"""Server lifecycle: shutdown, restarts with data intact, backend death, refusing an open door."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import asyncpg
import psycopg
import pytest

from tests.support.servers import REPO, SieveProcess


def test_sigterm_closes_sessions_and_stops_postgres_then_restart_keeps_data(fresh_server):
    server = fresh_server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as setup:
        setup.execute("create table kept (id int primary key, note text)")
        setup.execute("insert into kept values (1, 'survives restarts')")
    client = psycopg.connect(server.dsn(), autocommit=True)
    pidfile = server.data_dir / "pg" / "postmaster.pid"
    assert pidfile.exists()

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=20) == 0
    with pytest.raises(psycopg.OperationalError) as caught:
        client.execute("select 1")
    assert caught.value.sqlstate in ("57P01", None)  # None: libpq saw the close first
    client.close()
    assert not pidfile.exists(), "the embedded Postgres must stop with the server"
    assert "stopping embedded postgres" in server.log()

    server.start()
    with psycopg.connect(server.dsn()) as again:
        assert again.execute("select note from kept where id = 1").fetchone() == ("survives restarts",)
        version = again.execute("select max(version) from sieve.schema_version").fetchone()[0]
        assert version >= 1


def test_terminated_backend_gives_the_client_an_error_not_a_hang(sieve_server):
    victim = psycopg.connect(sieve_server.dsn(), autocommit=True)
    backend_pid = victim.execute("select pg_backend_pid()").fetchone()[0]
    with psycopg.connect(sieve_server.dsn(), autocommit=True) as admin:
        assert admin.execute("select pg_terminate_backend(%s)", (backend_pid,)).fetchone() == (True,)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as caught:
        victim.execute("select 1")
    assert time.monotonic() - started < 5
    assert caught.value.sqlstate in ("57P01", "08006")
    victim.close()


def test_killed_backend_process_gives_08006(fresh_server):
    server = fresh_server.start()
    victim = psycopg.connect(server.dsn(), autocommit=True)
    backend_pid = victim.execute("select pg_backend_pid()").fetchone()[0]
    os.kill(backend_pid, signal.SIGKILL)  # no goodbye message from Postgres at all
    with pytest.raises(psycopg.OperationalError) as caught:
        victim.execute("select 1")
    assert caught.value.sqlstate in ("08006", "57P02", None)
    victim.close()
    # Postgres restarts after a backend crash; the server keeps serving new sessions.
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(server.dsn()) as conn:
                assert conn.execute("select 5").fetchone() == (5,)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_refuses_to_listen_beyond_loopback_while_postgres_trusts_everyone(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0" in done.stderr
    assert "--embedded-password-file" in done.stderr
    assert not (tmp_path / "d").exists(), "nothing is started when the door would be open"


def test_embedded_password_enables_scram_beyond_loopback(tmp_path):
    server = SieveProcess(data_dir=tmp_path / "d", host="0.0.0.0", env={"SIEVEDB_PASSWORD": "pa55-word"})
    server.start()
    try:
        server.host = "127.0.0.1"
        with pytest.raises(asyncpg.InvalidPasswordError) as caught:
            asyncio.run(asyncpg.connect(server.dsn(password="wrong")))
        assert caught.value.sqlstate == "28P01"
        with psycopg.connect(server.dsn(password="pa55-word")) as conn:
            assert conn.execute("select current_user").fetchone() == ("postgres",)
    finally:
        server.stop()
