"""The server's list of running statements: listed with the planner's progress while they run,
gone when they end, cancellable by their own role (or a superuser) and no other."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from server.activity import CancelRefused
from tests.observe.conftest import WIDE_ROWS, Observed


class Background:
    """A statement running on a connection of its own, in a thread."""

    def __init__(
        self, observed: Observed, sql: str, user: str = "postgres", params: tuple | None = None
    ) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(observed, sql, user, params), daemon=True)
        self._thread.start()

    def _run(self, observed: Observed, sql: str, user: str, params: tuple | None) -> None:
        try:
            with observed.connect(user) as conn:
                self.result = conn.execute(sql, params).fetchall()
        except BaseException as exc:  # handed to the test
            self.error = exc
        finally:
            self.done.set()

    def join(self, timeout: float = 60) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the statement did not end"


def running(observed: Observed, role: str | None = None) -> list[dict]:
    activity = observed.live.server.activity
    return observed.live.on_loop(lambda: [s.as_dict() for s in activity.running(role)])


def wait_listed(observed: Observed, marker: str, job: Background, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not job.done.is_set():
        found = [r for r in running(observed) if marker in r["text"]]
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"{marker} was never listed as running (ended: {job.done.is_set()}, {job.error})")


def test_a_model_query_is_listed_with_its_progress_while_it_runs_and_gone_after(observed):
    name = observed.slow_function("slow_listed")
    job = Background(observed, f"select count(*) from wide_in where {name}(x) >= 0")
    seen = []
    while not job.done.is_set():
        seen += [r for r in running(observed) if name in r["text"]]
        time.sleep(0.02)
    job.join()
    assert job.error is None and job.result == [(WIDE_ROWS,)]
    assert seen, "the statement was never listed while it ran"
    assert {(r["kind"], r["role"], r["database"]) for r in seen} == {("model call", "postgres", "postgres")}
    assert len({r["id"] for r in seen}) == 1 and all(r["pid"] > 0 for r in seen)
    progress = [r["progress"] for r in seen if r["progress"] is not None]
    assert progress and {p["model"] for p in progress} == {name}
    done = [p["done"] for p in progress]
    assert done == sorted(done) and 0 < max(done) <= WIDE_ROWS  # a batch finished while listed
    assert all(p["rate"] >= 0 for p in progress)
    assert not [r for r in running(observed) if name in r["text"]]


def test_a_statement_is_cancelled_by_its_role_and_not_by_another(observed):
    name = observed.slow_function("slow_cancelled")
    job = Background(observed, f"select count(*) from wide_in where {name}(x) >= 0", user="alice")
    row = wait_listed(observed, name, job)
    assert row["role"] == "alice"
    activity = observed.live.server.activity
    with pytest.raises(CancelRefused, match="alice"):
        observed.live.on_loop(lambda: activity.cancel(row["id"], "bob"))
    assert not job.done.is_set(), "a refused cancel stopped the statement"
    assert observed.live.on_loop(lambda: activity.cancel(row["id"], "alice")) is True
    job.join()
    assert isinstance(job.error, psycopg.errors.QueryCanceled)
    assert observed.live.on_loop(lambda: activity.cancel(row["id"], "alice")) is False  # not running now


def test_a_superuser_may_cancel_another_roles_forwarded_statement(observed):
    job = Background(observed, "select pg_sleep(30), 'forwarded-marker'", user="alice")
    row = wait_listed(observed, "forwarded-marker", job)
    assert (row["kind"], row["role"]) == ("forwarded", "alice")
    assert not [r for r in running(observed, "postgres") if "forwarded-marker" in r["text"]]
    activity = observed.live.server.activity
    assert observed.live.on_loop(lambda: activity.cancel(row["id"], "postgres", superuser=True)) is True
    job.join(20)
    assert isinstance(job.error, psycopg.errors.QueryCanceled)
    deadline = time.monotonic() + 5
    while [r for r in running(observed) if "forwarded-marker" in r["text"]] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [r for r in running(observed) if "forwarded-marker" in r["text"]]


def test_a_statement_forwarded_over_the_extended_protocol_is_listed_until_it_ends(observed):
    job = Background(observed, "select pg_sleep(%s), 'extended-marker'", user="alice", params=(30,))
    row = wait_listed(observed, "extended-marker", job)
    assert (row["kind"], row["role"]) == ("forwarded", "alice")
    assert row["text"] == "select pg_sleep($1), 'extended-marker'"
    activity = observed.live.server.activity
    assert observed.live.on_loop(lambda: activity.cancel(row["id"], "alice")) is True
    job.join(20)
    assert isinstance(job.error, psycopg.errors.QueryCanceled)
    assert not [r for r in running(observed) if "extended-marker" in r["text"]]
