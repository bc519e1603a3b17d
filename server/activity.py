"""The statements running on this server right now, for the status page (and its cancel button).

Planned statements are registered where the session starts them and removed where they end;
their progress comes from the planner (``SessionPort.progress``). Forwarded statements cost the
hot path only a tuple on their session (``ClientSession.forwarded``): they are listed from the
open sessions, and one counts as running until Postgres has answered it (the link's
ReadyForQuery count); a planned statement whose final SQL Postgres runs stays listed that way.
Cancelling goes the way a CancelRequest goes (``SieveServer.cancel_session``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

TEXT_LIMIT = 1000  # characters of a statement's text kept for display

_ids = itertools.count(1)


def next_id() -> int:
    """A statement id unique in this process (forwarded and planned statements share them)."""
    return next(_ids)


@dataclass
class Progress:
    model: str
    done: int
    total: int | None
    elapsed: float  # seconds of this model's pass so far

    @property
    def rate(self) -> float:
        """Inputs run per second."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        if self.total is None or self.rate <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate


@dataclass
class Statement:
    id: int
    pid: int  # the session's cancel-key pid (Postgres's backend pid, as the client sees it)
    role: str
    database: str
    text: str
    kind: str  # "forwarded", or the planner's reason ("model call", "approximate clause", ...)
    started_at: float  # seconds since the epoch
    session: Any = field(repr=False, compare=False)  # server.session.ClientSession
    progress: Progress | None = None

    def as_dict(self) -> dict:
        """Plain JSON-able data (the status page's row)."""
        out = {
            "id": self.id,
            "pid": self.pid,
            "role": self.role,
            "database": self.database,
            "text": self.text,
            "kind": self.kind,
            "started_at": self.started_at,
            "seconds": max(time.time() - self.started_at, 0.0),
            "progress": None,
        }
        if self.progress is not None:
            p = self.progress
            out["progress"] = {
                "model": p.model,
                "done": p.done,
                "total": p.total,
                "rate": p.rate,
                "seconds_left": p.seconds_left,
            }
        return out


class CancelRefused(Exception):
    """Cancelling another role's statement without being a superuser."""


class Activity:
    def __init__(self, cancel_session: Callable[[Any], None]) -> None:
        self._cancel_session = cancel_session
        self._planned: dict[int, Statement] = {}
        self._sessions: Callable[[], Iterable[Any]] = tuple

    def watch_sessions(self, sessions: Callable[[], Iterable[Any]]) -> None:
        """Where forwarded statements are found: the server's open sessions."""
        self._sessions = sessions

    # -- planned statements --------------------------------------------------------------------

    def start(self, session: Any, text: str, kind: str) -> Statement:
        statement = Statement(
            id=next_id(),
            pid=_pid(session),
            role=session.user,
            database=session.database,
            text=text[:TEXT_LIMIT],
            kind=kind,
            started_at=time.time(),
            session=session,
        )
        self._planned[statement.id] = statement
        return statement

    def end(self, statement: Statement) -> None:
        self._planned.pop(statement.id, None)

    # -- reading -------------------------------------------------------------------------------

    def running(self, role: str | None = None) -> list[Statement]:
        """Statements running now, oldest first; with ``role``, only that role's."""
        found = list(self._planned.values())
        found += [s for s in map(_forwarded, self._sessions()) if s is not None]
        if role is not None:
            found = [s for s in found if s.role == role]
        return sorted(found, key=lambda s: (s.started_at, s.id))

    def get(self, statement_id: int) -> Statement | None:
        return next((s for s in self.running() if s.id == statement_id), None)

    def cancel(self, statement_id: int, role: str, *, superuser: bool = False) -> bool:
        """Cancel a running statement as a CancelRequest would; False when it is not running
        (any more). Another role's statement only for a superuser (CancelRefused)."""
        statement = self.get(statement_id)
        if statement is None:
            return False
        if statement.role != role and not superuser:
            raise CancelRefused(f'statement {statement_id} belongs to role "{statement.role}", not "{role}"')
        self._cancel_session(statement.session)
        return True


def _pid(session: Any) -> int:
    key = session.cancel_key
    return key[0] if key is not None else 0


def _forwarded(session: Any) -> Statement | None:
    """The forwarded statement a session is waiting on, if Postgres has not answered it yet."""
    noted = getattr(session, "forwarded", None)
    link = session.link
    if noted is None or link is None or session.closed:
        return None
    statement_id, text, started_at, syncs, kind = noted
    if link.ready_count >= syncs:
        return None
    return Statement(
        id=statement_id,
        pid=_pid(session),
        role=session.user,
        database=session.database,
        text=bytes(text).decode("utf-8", "replace"),
        kind=kind,
        started_at=started_at,
        session=session,
    )
