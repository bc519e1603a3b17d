"""Protocol edges real drivers rarely exercise: raw startup requests and malformed frames."""

from __future__ import annotations

import struct

import psycopg
import pytest

from tests.support.rawpg import RawConnection, error_fields, message, request_packet, startup_packet

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


@pytest.fixture()
def bystander(sieve_server):
    """Another open session that must survive whatever the test does to its own."""
    with psycopg.connect(sieve_server.dsn(), autocommit=True) as conn:
        conn.execute("select 1")
        yield conn
        assert conn.execute("select 41 + 1").fetchone() == (42,)


def _expect_fatal(raw: RawConnection, sqlstate: str) -> dict[str, str]:
    kind, body = raw.read_message()
    assert kind == b"E"
    fields = error_fields(body)
    assert fields["S"] == "FATAL"
    assert fields["C"] == sqlstate
    assert raw.closed_by_peer()
    return fields


def test_ssl_and_gssenc_requests_are_declined_then_startup_works(sieve_server):
    raw = RawConnection(sieve_server.host, sieve_server.port)
    raw.send(request_packet(GSSENC_REQUEST))
    assert raw.recv_byte() == b"N"
    raw.send(request_packet(SSL_REQUEST))
    assert raw.recv_byte() == b"N"
    messages = raw.login()
    kinds = [kind for kind, _ in messages]
    assert kinds[0] == b"R" and kinds[-1] == b"Z"
    params = dict(body.split(b"\0")[:2] for kind, body in messages if kind == b"S")
    assert params[b"server_version"].startswith(b"18")
    assert params[b"DateStyle"] == b"ISO, MDY"
    raw.close()


def test_simple_query_multi_statement_and_empty_query(sieve_server):
    raw = RawConnection(sieve_server.host, sieve_server.port)
    raw.login()
    raw.send(message(b"Q", b"select 1; select 2\0"))
    kinds = [kind for kind, _ in raw.read_until(b"Z")]
    assert kinds.count(b"D") == 2 and kinds.count(b"C") == 2
    raw.send(message(b"Q", b";\0"))
    assert [kind for kind, _ in raw.read_until(b"Z")] == [b"I", b"Z"]
    raw.close()


def test_garbage_frame_closes_only_that_session(sieve_server, bystander):
    raw = RawConnection(sieve_server.host, sieve_server.port)
    raw.login()
    raw.send(b"G\x00\x00\x00\x08junk")
    fields = _expect_fatal(raw, "08P01")
    assert "invalid frontend message type" in fields["M"]


def test_two_gib_length_prefix_is_rejected_without_waiting(sieve_server, bystander):
    raw = RawConnection(sieve_server.host, sieve_server.port, timeout=5)
    raw.login()
    raw.send(b"Q" + struct.pack("!I", 0x8000_0000) + b"select 1")
    fields = _expect_fatal(raw, "08P01")
    assert "invalid message length" in fields["M"]


def test_garbage_instead_of_startup_packet(sieve_server, bystander):
    raw = RawConnection(sieve_server.host, sieve_server.port, timeout=5)
    raw.send(b"\xff\xff\xff\xffGET / HTTP/1.1\r\n\r\n")
    fields = _expect_fatal(raw, "08P01")
    assert "startup packet" in fields["M"]


def test_unsupported_protocol_major_version(sieve_server):
    raw = RawConnection(sieve_server.host, sieve_server.port, timeout=5)
    raw.send(startup_packet(version=(4 << 16)))
    fields = _expect_fatal(raw, "0A000")
    assert "unsupported frontend protocol 4.0" in fields["M"]


def test_missing_user_is_rejected(sieve_server):
    raw = RawConnection(sieve_server.host, sieve_server.port, timeout=5)
    body = struct.pack("!I", 196608) + b"database\0postgres\0\0"
    raw.send(struct.pack("!I", len(body) + 4) + body)
    _expect_fatal(raw, "28000")


def test_protocol_3_2_keys_and_cancel(sieve_server):
    """libpq 18 asks for 3.2: longer cancel keys must round-trip through our own key table."""
    dsn = sieve_server.dsn() + "?max_protocol_version=3.2"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.info.backend_pid > 0
        assert conn.execute("select 1").fetchone() == (1,)
        _cancel_soon(conn)
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(20)")
        assert conn.execute("select 2").fetchone() == (2,)


def _cancel_soon(conn: psycopg.Connection, delay: float = 0.3) -> None:
    import threading

    threading.Timer(delay, conn.cancel_safe).start()


def test_cancel_pg_sleep_within_two_seconds(sieve_server, bystander):
    import time

    with psycopg.connect(sieve_server.dsn(), autocommit=True) as conn:
        _cancel_soon(conn)
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(30)")
        assert time.monotonic() - started < 2.0
        assert conn.execute("select 'still usable'").fetchone() == ("still usable",)


def test_cancel_with_a_wrong_key_cancels_nothing(sieve_server):
    import threading
    import time

    from tests.support.rawpg import RawConnection as Raw

    with psycopg.connect(sieve_server.dsn(), autocommit=True) as conn:
        pid = conn.info.backend_pid

        def bogus_cancel() -> None:
            raw = Raw(sieve_server.host, sieve_server.port)
            raw.send(struct.pack("!IIII", 16, 80877102, pid, 12345))
            raw.closed_by_peer()

        threading.Timer(0.2, bogus_cancel).start()
        started = time.monotonic()
        assert conn.execute("select pg_sleep(1), 7").fetchone()[1] == 7
        assert time.monotonic() - started >= 0.9
