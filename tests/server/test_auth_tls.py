"""Authentication is Postgres's: SieveDB relays the exchange. TLS terminates at SieveDB."""

from __future__ import annotations

import asyncio
import subprocess

import asyncpg
import psycopg
import pytest

from tests.support.servers import PlainPostgres, SieveProcess


@pytest.fixture(scope="module")
def external_pg(tmp_path_factory):
    """An "external" Postgres that requires SCRAM on TCP, like a managed database would."""
    cluster = PlainPostgres(data_dir=tmp_path_factory.mktemp("external") / "pg").start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def sieve_on_external(external_pg, tmp_path_factory):
    server = SieveProcess(
        data_dir=tmp_path_factory.mktemp("sieve-ext") / "unused",
        extra_args=["--postgres-dsn", external_pg.dsn()],
    ).start()
    yield server
    server.stop()


def test_wrong_password_is_rejected_with_28P01(sieve_on_external):
    with pytest.raises(asyncpg.InvalidPasswordError) as caught:
        asyncio.run(asyncpg.connect(sieve_on_external.dsn(password="not-it")))
    assert caught.value.sqlstate == "28P01"


def test_scram_login_relayed_for_each_driver(sieve_on_external, external_pg):
    dsn = sieve_on_external.dsn(password=external_pg.password)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select current_user, 40 + 2").fetchone() == ("postgres", 42)

    async def via_asyncpg() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("select 7 * 6")
        finally:
            await conn.close()

    assert asyncio.run(via_asyncpg()) == 42


def test_roles_and_pg_hba_of_the_backend_apply(sieve_on_external, external_pg):
    admin_dsn = sieve_on_external.dsn(password=external_pg.password)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("drop role if exists reader")
        admin.execute("create role reader login password 'reader-pw'")
    with psycopg.connect(sieve_on_external.dsn(user="reader", password="reader-pw")) as conn:
        assert conn.execute("select current_user").fetchone() == ("reader",)
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(asyncpg.connect(sieve_on_external.dsn(user="reader", password="nope")))


def test_catalog_is_migrated_in_the_external_database(sieve_on_external, external_pg):
    with psycopg.connect(sieve_on_external.dsn(password=external_pg.password)) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "select table_name from information_schema.tables where table_schema = 'sieve'"
            )
        }
    assert {"models", "query_log", "schema_version"} <= tables


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_when_configured(tls_files, tmp_path):
    cert, key = tls_files
    server = SieveProcess(
        data_dir=tmp_path / "d", extra_args=["--tls-cert", str(cert), "--tls-key", str(key)]
    ).start()
    try:
        with psycopg.connect(server.dsn() + "?sslmode=require") as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("select 'encrypted'").fetchone() == ("encrypted",)
        with psycopg.connect(server.dsn() + "?sslmode=disable") as conn:
            assert not conn.pgconn.ssl_in_use
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        server.stop()


def test_no_tls_configured_means_sslmode_require_fails(sieve_server):
    with pytest.raises(psycopg.OperationalError, match="(?i)ssl"):
        psycopg.connect(sieve_server.dsn() + "?sslmode=require")
    with psycopg.connect(sieve_server.dsn() + "?sslmode=prefer") as conn:
        assert not conn.pgconn.ssl_in_use
