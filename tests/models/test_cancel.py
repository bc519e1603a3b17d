"""Stopping materialization: CancelRequest, statement_timeout, client disconnect."""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
import pytest

from tests.models.test_model_serving import deep_shared_mlp
from tests.support.model_files import cache_table

BATCH_ROWS = 1024  # planner.materialize.BATCH_ROWS: the cache grows by whole batches


@pytest.fixture(scope="module")
def slow_world(world):
    """20,000 distinct inputs and a model that needs ~1 ms per row: many seconds of work."""
    path = deep_shared_mlp(world.models_dir, depth=80)
    rng = np.random.default_rng(1)
    with world.connect() as conn:
        conn.execute("create table many_digits (id int primary key, pixels real[])")
        with conn.cursor().copy("copy many_digits from stdin") as copy:
            for i in range(20_000):
                base = world.digits.x[i % len(world.digits.x)]
                copy.write_row((i, (base + rng.normal(0, 0.01, 64)).astype(np.float32).tolist()))
        for name in ("slow_a", "slow_b", "slow_c", "slow_d"):
            conn.execute(
                f"create function {name}(x real[]) returns bigint language onnx "
                f"as '{path.name}', '{{\"output\": \"label\"}}'"
            )
    return world


def _cached_rows(conn, name: str) -> int:
    return conn.execute(f"select count(*) from {cache_table(conn, name)}").fetchone()[0]


def test_cancel_request_stops_materialization_within_two_seconds(slow_world):
    with slow_world.connect() as conn:
        threading.Timer(1.5, conn.cancel_safe).start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as caught:
            conn.execute("select count(*) from many_digits where slow_a(pixels) = 3")
        assert time.monotonic() - started < 1.5 + 2.0
        assert "user request" in str(caught.value)
        time.sleep(0.5)  # a batch being written when the cancel came commits or not, whole
        cached = _cached_rows(conn, "slow_a")
        assert cached < 20_000 and cached % BATCH_ROWS == 0
        assert conn.execute("select 1").fetchone() == (1,)


def test_statement_timeout_stops_materialization(slow_world):
    with slow_world.connect() as conn:
        conn.execute("set statement_timeout = '1s'")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as caught:
            conn.execute("select count(*) from many_digits where slow_b(pixels) = 3")
        assert time.monotonic() - started < 1.0 + 2.0
        assert "statement timeout" in str(caught.value)
        conn.execute("reset statement_timeout")
        assert conn.execute("select 2").fetchone() == (2,)


def test_client_disconnect_stops_the_work(slow_world):
    conn = slow_world.connect()
    sock_fd = conn.pgconn.socket

    def hang_up() -> None:
        import os
        import socket

        time.sleep(1.0)
        socket.socket(fileno=os.dup(sock_fd)).shutdown(socket.SHUT_RDWR)

    threading.Thread(target=hang_up).start()
    with pytest.raises(psycopg.OperationalError):
        conn.execute("select count(*) from many_digits where slow_c(pixels) = 3")
    conn.close()
    with slow_world.connect() as other:
        first = _cached_rows(other, "slow_c")
        time.sleep(2.0)
        assert _cached_rows(other, "slow_c") == first < 20_000, "work went on after the client left"


def test_long_materialization_reports_progress_notices(slow_world):
    notices: list[str] = []
    with slow_world.connect() as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        conn.execute("set statement_timeout = '7s'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select count(*) from many_digits where slow_d(pixels) = 3")
    progress = [n for n in notices if n.startswith("model slow_d:")]
    assert progress, notices
    assert "of 20,000 inputs run" in progress[0] and "s left" in progress[0]
