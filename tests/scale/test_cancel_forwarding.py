"""A CancelRequest that reaches the wrong front-end (a TCP load balancer in front) is forwarded
once to the front-end that issued the key, as pgbouncer peers do."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from server import messages
from server.peers import as_forwarded, issue_key
from tests.support.frontends import RoundRobinProxy
from tests.support.rawpg import RawConnection

DEADLINE_S = 15.0


def _wait(predicate, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _sleeping(pg: psycopg.Connection, tag: str) -> bool:
    return (
        pg.execute(
            "select count(*) from pg_stat_activity where state = 'active' and query like %s", (f"%{tag}%",)
        ).fetchone()[0]
        > 0
    )


def _registrations(pg: psycopg.Connection) -> dict[str, int]:
    return {address: i for i, address in pg.execute("select id, address from sieve.frontends").fetchall()}


def _send_cancel(server, pid: int, key: bytes) -> None:
    raw = RawConnection(server.host, server.port)
    try:
        raw.send(messages.cancel_request(pid, key))
        assert raw.closed_by_peer()  # answered the way Postgres answers one: by closing
    finally:
        raw.close()


def test_each_frontend_registers_with_the_address_it_listens_on(frontends):
    with psycopg.connect(frontends.backing_dsn(), autocommit=True) as pg:
        registered = _registrations(pg)
    assert set(registered) == {f"127.0.0.1:{s.port}" for s in frontends.servers}
    assert len(set(registered.values())) == 2 and all(1 <= i <= 127 for i in registered.values())


@pytest.mark.parametrize("protocol", ["3.0", "3.2"])
def test_a_cancel_sent_through_a_load_balancer_to_the_other_frontend_cancels_the_query(frontends, protocol):
    a, b = frontends.servers
    proxy = RoundRobinProxy([(a.host, a.port), (b.host, b.port)])
    tag = f"lb cancel {protocol.replace('.', '_')}"
    dsn = f"host=127.0.0.1 port={proxy.port} user=postgres password={frontends.postgres.password}"
    b_log = len(b.log())
    try:
        with (
            psycopg.connect(dsn, autocommit=True, max_protocol_version=protocol) as conn,
            psycopg.connect(frontends.backing_dsn(), autocommit=True) as pg,
        ):
            assert proxy.routed == [0]  # the session is on A
            canceller = threading.Thread(
                target=lambda: (_wait(lambda: _sleeping(pg, tag), "the query"), conn.cancel_safe(timeout=10))
            )
            canceller.start()
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute(f"select pg_sleep(60) /* {tag} */")
            canceller.join()
            assert proxy.routed == [0, 1]  # the cancel went to B
            assert conn.execute("select 1").fetchone() == (1,)  # the session goes on
    finally:
        proxy.close()
    assert "forwarded to front-end" in b.log()[b_log:]


def test_a_forwarded_cancel_is_never_forwarded_again(frontends):
    a, b = frontends.servers
    with psycopg.connect(frontends.backing_dsn(), autocommit=True) as pg:
        a_id = _registrations(pg)[f"127.0.0.1:{a.port}"]
    a_log, b_log = len(a.log()), len(b.log())
    # a key A issued (unknown to B), already forwarded once: B drops it
    _send_cancel(b, 4242, as_forwarded(issue_key(a_id, 4)))
    _wait(lambda: "unknown key pid=4242" in b.log()[b_log:], "B to drop the cancel")
    # the same key not yet forwarded: B forwards it to A, which does not know it either and
    # drops it (it came forwarded)
    _send_cancel(b, 4343, issue_key(a_id, 4))
    _wait(lambda: "unknown key pid=4343" in a.log()[a_log:], "A to drop the forwarded cancel")
    time.sleep(0.3)  # had A forwarded it back, B would log it by now
    assert "4242" not in a.log()[a_log:]
    seen_by_b = [line for line in b.log()[b_log:].splitlines() if "pid=4343" in line]
    assert len(seen_by_b) == 1 and "forwarded to front-end" in seen_by_b[0]  # once, not back again


def test_stale_registrations_are_ignored_and_cleaned(frontends):
    a, b = frontends.servers
    with psycopg.connect(frontends.backing_dsn(), autocommit=True) as pg:
        pg.execute(
            "insert into sieve.frontends (id, address, started, heartbeat) "
            "values (100, %s, now() - interval '1 hour', now() - interval '1 hour')",
            (f"127.0.0.1:{a.port}",),  # were it believed, the cancel would reach A
        )
        a_log, b_log = len(a.log()), len(b.log())
        _send_cancel(b, 4444, issue_key(100, 4))
        _wait(lambda: "front-end 100: no live registration" in b.log()[b_log:], "B to drop the cancel")
        assert "4444" not in a.log()[a_log:]
        _wait(
            lambda: pg.execute("select count(*) from sieve.frontends where id = 100").fetchone() == (0,),
            "cleanup",
        )
        assert len(_registrations(pg)) == 2


def test_a_bad_advertise_address_is_refused_before_anything_starts(tmp_path):
    import subprocess
    import sys

    data_dir = tmp_path / "data"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--data-dir",
            str(data_dir),
            "--advertise-address",
            "nowhere",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--advertise-address: advertise address 'nowhere' is not host:port" in done.stderr
    assert not data_dir.exists()  # no embedded Postgres was made
