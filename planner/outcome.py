"""What the planner answers for a statement, in terms the server turns into protocol messages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Forward:
    """Send the client's statement on to Postgres unchanged (its inputs are now materialized).

    ``after`` runs once Postgres has answered it, before the session reads on (e.g. to learn
    about a view the statement created). ``sql`` replaces the statement text (simple protocol
    only: the planner is told when that is allowed)."""

    after: Callable[[], Awaitable[None]] | None = None
    sql: str | None = None
    settings: dict[str, str] = field(default_factory=dict)  # SET for this statement only


@dataclass(frozen=True)
class Done:
    """The planner completed the statement itself; ``tag`` is its CommandComplete tag."""

    tag: str


@dataclass(frozen=True)
class Rows:
    """The planner's own result set (text columns), e.g. EXPLAIN output."""

    columns: list[str]
    rows: list[list[str | None]]
    tag: str


@dataclass(frozen=True)
class Failed:
    """The statement fails with this error; the session and its transaction state carry on."""

    sqlstate: str
    message: str
    detail: str | None = None
    hint: str | None = None


Outcome = Forward | Done | Rows | Failed


class PlanError(Exception):
    """Raised inside the planner; becomes a ``Failed`` outcome."""

    def __init__(self, sqlstate: str, message: str, *, detail: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint

    def outcome(self) -> Failed:
        return Failed(self.sqlstate, str(self), self.detail, self.hint)


@dataclass
class SqlResult:
    """What running SQL in the client's own backend session produced."""

    tags: list[str] = field(default_factory=list)
    rows: list[list[str | None]] = field(default_factory=list)
    error: Failed | None = None


class SessionPort(Protocol):
    """What the planner may do with the client's session (implemented by the server)."""

    user: str
    database: str
    in_transaction: bool  # inside the client's transaction block

    async def run_sql(self, sql: str) -> SqlResult:
        """Run SQL (simple protocol, text results) in the client's own backend session."""
        ...

    async def fetch(self, sql: str, args: tuple = (), *, lenient: bool = False) -> list[tuple]:
        """Rows of a query derived from the client's statement, run with the client's role,
        database and transaction; Postgres's error is raised as a PlanError."""
        ...

    async def fetchval(self, sql: str, args: tuple = (), *, lenient: bool = False) -> object: ...

    def stream(
        self, sql: str, args: tuple = (), *, chunk_rows: int = 1024, lenient: bool = False
    ) -> AbstractAsyncContextManager[AsyncIterator[list[tuple]]]:
        """Rows in chunks (``async with port.stream(sql) as chunks: async for rows in chunks``);
        other queries may run between chunks."""
        ...

    async def column_types(self, sql: str) -> list:
        """Result column types (``.schema``, ``.name``) of ``sql``, prepared but not run."""
        ...

    def batch(self) -> AbstractAsyncContextManager[None]:
        """Run the queries inside in one snapshot (one implicit transaction when idle)."""
        ...

    def notice(self, message: str) -> None:
        """Send the client a NOTICE."""
        ...

    def progress(self, model: str, done: int, total: int | None, elapsed: float) -> None:
        """How far a model's pass over its inputs is (``total`` None until counted), for the
        server's list of running statements; cheap, called often."""
        ...

    async def arm_statement_timeout(self) -> None:
        """Start enforcing the session's statement_timeout (call before expensive work)."""
        ...
