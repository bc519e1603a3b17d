"""pgbench (PostgreSQL 18) through SieveDB: initialisation with COPY, then TPC-B-like runs in the
simple, extended and prepared query modes, several clients and threads at once."""

from __future__ import annotations

import re
import subprocess
import uuid

import psycopg
import pytest

CLIENTS, THREADS, TRANSACTIONS = 4, 2, 200


@pytest.fixture(scope="module")
def bench_db(sieve_server, pg_bin, libpq_env):
    """A database of its own (created through SieveDB), initialised by ``pgbench -i -s 1``."""
    name = f"pgbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(sieve_server.dsn(), autocommit=True) as conn:
        conn.execute(f"create database {name}")
    init = subprocess.run(
        [str(pg_bin / "pgbench"), "-i", "-s", "1", "-q", name],
        capture_output=True,
        text=True,
        env=libpq_env,
        timeout=120,
    )
    try:
        assert init.returncode == 0, init.stdout + init.stderr
        assert "done in" in init.stderr, init.stderr
        with psycopg.connect(sieve_server.dsn(database=name), autocommit=True) as conn:
            counts = conn.execute(
                "select (select count(*) from pgbench_accounts), (select count(*) from pgbench_branches), "
                "(select count(*) from pgbench_tellers), (select count(*) from pgbench_history), "
                "(select sum(abalance) from pgbench_accounts)"
            ).fetchone()
        assert counts == (100_000, 1, 10, 0, 0)
        yield name
    finally:
        with psycopg.connect(sieve_server.dsn(), autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


def parse(output: str) -> dict[str, str]:
    fields = {}
    for line in output.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_run(mode, bench_db, sieve_server, pg_bin, libpq_env):
    def balances(conn) -> tuple[int, int, int]:
        return conn.execute(
            "select (select sum(abalance) from pgbench_accounts), "
            "(select sum(tbalance) from pgbench_tellers), (select sum(bbalance) from pgbench_branches)"
        ).fetchone()

    with psycopg.connect(sieve_server.dsn(database=bench_db), autocommit=True) as conn:
        before = balances(conn)
    result = subprocess.run(
        [
            str(pg_bin / "pgbench"),
            "-M",
            mode,
            "-c",
            str(CLIENTS),
            "-j",
            str(THREADS),
            "-t",
            str(TRANSACTIONS),
            bench_db,
        ],
        capture_output=True,
        text=True,
        env=libpq_env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fields = parse(result.stdout)
    total = CLIENTS * TRANSACTIONS
    assert fields["query mode"] == mode
    assert fields["number of clients"] == str(CLIENTS)
    assert fields["number of threads"] == str(THREADS)
    assert fields["number of transactions per client"] == str(TRANSACTIONS)
    assert fields["number of transactions actually processed"] == f"{total}/{total}"
    assert re.fullmatch(r"0 \(0\.000%\)", fields["number of failed transactions"]), fields
    tps = re.search(r"^tps = ([\d.]+) \(without initial connection time\)$", result.stdout, re.M)
    assert tps and float(tps.group(1)) > 0, result.stdout

    # pgbench truncates pgbench_history before each run: every transaction left one row, and
    # each moved its delta into an account, a teller and a branch alike
    with psycopg.connect(sieve_server.dsn(database=bench_db), autocommit=True) as conn:
        history, delta = conn.execute(
            "select count(*), coalesce(sum(delta), 0) from pgbench_history"
        ).fetchone()
        after = balances(conn)
    assert history == total
    assert [a - b for a, b in zip(after, before, strict=True)] == [delta] * 3
