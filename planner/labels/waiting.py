"""Waiting for labels: SV001, or, under ``SET sieve.label_wait = '30min'``, a wait polling
SieveDB's own connection (woken at once by labels given through this server: ``poke``) with a
progress NOTICE every few seconds. A cancel, statement_timeout or client disconnect cancels the
wait like any materialization; the requests stay either way. ``run_collecting`` lets an
approximate query ask for its whole sample at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from planner.labels import store
from planner.labels.statement import current, hand_back
from planner.model_spec import ModelSpec
from planner.outcome import PlanError, SessionPort
from planner.sqlstate import LABELS_PENDING

POLL_S = 1.0  # labels given through another front-end are seen within this
NOTICE_EVERY_S = 3.0
T = TypeVar("T")
_wakeups: dict[int, set[asyncio.Event]] = defaultdict(set)

_LABEL_WAIT = (
    "SELECT pg_catalog.date_part('epoch', coalesce(nullif(pg_catalog.current_setting("
    "'sieve.label_wait', true), ''), '0')::pg_catalog.interval)::pg_catalog.float8"
)


def poke(model_id: int) -> None:
    """A label of this function was given here: wake the statements waiting for its labels."""
    for event in list(_wakeups.get(model_id, ())):
        event.set()


class HeldNotices:
    """The client's port, with NOTICEs held back: a run on provisional labels (inputs still
    unlabelled) must not tell the client about an answer it will not get."""

    def __init__(self, port: SessionPort) -> None:
        object.__setattr__(self, "_port", port)
        object.__setattr__(self, "held", [])

    def notice(self, message: str) -> None:
        self.held.append(message)

    def release(self) -> None:
        for message in self.held:
            self._port.notice(message)
        self.held.clear()

    def __getattr__(self, name: str):
        return getattr(self._port, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._port, name, value)


async def run_collecting(run: Callable[[SessionPort], Awaitable[T]], dbs, port: SessionPort) -> T:
    """Run an approximate query collecting the labels it needs: an input with no label reads
    as unlabelled (the query's lenient reads), so every unit it samples is asked for at once
    (only draws that depend on labels can ask for more later). Then SV001 with all of them, or,
    under sieve.label_wait, wait for them and run the query again (the same seed draws the same
    units: now labelled)."""
    statement = current()
    statement.collect = True
    started: float | None = None
    try:
        while True:
            statement.pending = {}
            held = HeldNotices(port)
            try:
                outcome = await run(held)
            except PlanError:
                if not statement.pending:
                    held.release()
                    raise
                outcome = None  # a strict read of an unlabelled input: the labels come first
            if not statement.pending:
                held.release()
                return outcome
            wanted = {m: (spec, list(d)) for m, (spec, d) in statement.pending.items()}
            wait_s = await wait_setting(port)
            started = time.monotonic() if started is None else started
            left = wait_s - (time.monotonic() - started)
            if left <= 0:
                await hand_back(dbs, statement)
                raise pending_error({s.name: (len(d), len(d)) for s, d in wanted.values()})
            await wait_for_labels(dbs, port, wanted, left, statement)
    finally:
        statement.collect = False


async def wait_setting(port: SessionPort) -> float:
    if not getattr(port, "uses_sieve_settings", True):  # a session that never named sieve.*
        return 0.0
    return float(await port.fetchval(_LABEL_WAIT) or 0.0)


async def wait_for_labels(
    dbs, port: SessionPort, wanted: dict[int, tuple[ModelSpec, list[bytes]]], wait_s: float, statement
) -> None:
    """Until every wanted input is labelled, or SV001 after ``wait_s`` seconds."""
    await port.arm_statement_timeout()
    event = asyncio.Event()
    for model_id in wanted:
        _wakeups[model_id].add(event)
    started = time.monotonic()
    last_notice = 0.0
    try:
        while True:
            counts = {
                spec.name: (await store.count_pending(dbs.read, m, digests), len(digests))
                for m, (spec, digests) in wanted.items()
            }
            if not any(pending for pending, _ in counts.values()):
                return
            now = time.monotonic()
            left = wait_s - (now - started)
            if left <= 0:
                await hand_back(dbs, statement)
                raise pending_error(counts, waited=wait_s)
            if now - last_notice >= NOTICE_EVERY_S:
                last_notice = now
                port.notice(_waiting(counts, left))
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(POLL_S, left))
    finally:
        for model_id in wanted:
            _wakeups[model_id].discard(event)


def _waiting(counts: dict[str, tuple[int, int]], left: float) -> str:
    parts = [f"{p} of {t} labels of {name}" for name, (p, t) in counts.items() if p]
    first = next(name for name, (p, _) in counts.items() if p)
    return (
        f"waiting for {'; '.join(parts)} ({left:,.0f} s left; "
        f"SELECT sieve.labelling_link('{first}') gives a labelling page)"
    )


def pending_error(counts: dict[str, tuple[int, int]], waited: float | None = None) -> PlanError:
    """SV001: how many labels are pending for which function, and where to give them."""
    pending = {name: c for name, c in counts.items() if c[0]}
    name = next(iter(pending)).replace("'", "''")
    after = f" after waiting {waited:,.0f} s" if waited is not None else ""
    listed = "; ".join(f"{p} of {t} labels pending for function {n}" for n, (p, t) in pending.items())
    return PlanError(
        LABELS_PENDING,
        f"{listed}{after}",
        detail="The statement needs labels people give; its inputs are queued in sieve.label_requests "
        "and stay there until labelled.",
        hint=f"give them at the link SELECT sieve.labelling_link('{name}') returns, or with "
        f"SELECT sieve.label('{name}', 'table', key, value); then run the statement again "
        "(SET sieve.label_wait = '30min' waits for them instead)",
    )
