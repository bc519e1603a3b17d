"""Running a statement the planner claimed, inside the client's own backend session.

The session holds the statement's frames (a simple Query, or an extended batch through Sync),
waits until Postgres has answered everything sent before it, lets the planner work, then either
forwards the held frames or answers them itself.

Extended protocol: a held batch starts at the Bind of a statement that calls models. Postgres
prepared that statement itself (an approximate one without its clause, see ``ClientSession._route``),
so it describes parameters and columns. When the planner answers with complete SQL of its own,
SieveDB prepares that as the unnamed statement (Parse + Sync in an exchange whose replies the
client never sees) and rewrites the client's Bind to bind it, keeping portal and result formats.
A batch the client left open before the Bind is first closed with a Sync of SieveDB's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from planner.classify import APPROXIMATE, FORWARD, Decision
from planner.outcome import Done, Failed, Forward, Outcome, PlanError, Rows, SqlResult
from server import frames, messages, pgvalues, sqlstate
from server.activity import Progress, Statement
from server.client_sql import ClientSql
from server.params import Bind, ParamText, as_text, parse_bind

if TYPE_CHECKING:
    from server.session import ClientSession

log = logging.getLogger("sievedb.server.planned")

_SHORT = struct.Struct("!h")
_LEN = struct.Struct("!i")


def cstrings(view: bytes | bytearray, start: int, end: int, count: int) -> list[str]:
    """The first ``count`` NUL-terminated strings of a frame body."""
    found = []
    for _ in range(count):
        stop = view.index(0, start, end)
        found.append(bytes(view[start:stop]).decode("utf-8", "replace"))
        start = stop + 1
    return found


@dataclass(frozen=True)
class PreparedPlan:
    """A statement the client prepared that calls models: planned again at every Bind."""

    decision: Decision
    sql: str
    param_oids: list[int]


@dataclass
class PlannedJob:
    decision: Decision
    sql: str
    simple: bool
    frames: list[bytes] = field(default_factory=list)
    started: bool = False
    param_oids: list[int] = field(default_factory=list)  # from the statement's Parse
    held: bool = False  # Postgres never sees its Parse: answered here or forwarded whole
    failure: Failed | None = None  # known to fail before planning (an invalid approximate clause)
    resets: tuple[str, ...] = ()  # not a statement: the client's Sync, then RESET of these settings
    malformed: frames.Malformed | None = None  # the first held frame Postgres could not read

    @classmethod
    def simple(cls, decision: Decision, sql: str) -> PlannedJob:
        return cls(decision, sql, simple=True)

    @classmethod
    def extended(
        cls,
        planned: PreparedPlan | Decision,
        sql: str | None = None,
        held: bool = False,
        failure: Failed | None = None,
    ) -> PlannedJob:
        if isinstance(planned, PreparedPlan):
            return cls(planned.decision, planned.sql, simple=False, param_oids=planned.param_oids)
        return cls(planned, sql, simple=False, held=held, failure=failure)

    @classmethod
    def resetting(cls, settings: tuple[str, ...]) -> PlannedJob:
        return cls(FORWARD, "", simple=False, resets=settings)

    def bind(self) -> Bind | None:
        for frame in self.frames:
            if frame[0] == messages.BIND:
                return parse_bind(frame)
        return None

    def take(self, kind: int, frame: bytes) -> bool:
        """Add a held frame; True once the job has everything it needs to run."""
        self.frames.append(frame)
        return self.simple or kind == messages.SYNC or kind == messages.FLUSH

    @property
    def ends_at_flush(self) -> bool:
        return not self.simple and self.frames[-1][0] == messages.FLUSH

    @property
    def syncs(self) -> int:
        return sum(1 for f in self.frames if f[0] in (messages.QUERY, messages.SYNC))


class SessionPortImpl:
    """The planner's view of the client session (see planner.outcome.SessionPort)."""

    def __init__(self, session: ClientSession) -> None:
        self._session = session
        self._started = asyncio.get_running_loop().time()
        self._timer: asyncio.TimerHandle | None = None
        self._armed = False
        self.user = session.user
        self.database = session.database
        self._simple_queries = 0
        self.statement: Statement | None = None  # in the server's activity list while it runs
        client_sql = ClientSql(session)
        # the planner's SQL derived from the client's statement: run with the client's privileges
        self.fetch = client_sql.fetch
        self.fetchval = client_sql.fetchval
        self.stream = client_sql.stream
        self.column_types = client_sql.column_types
        self.batch = client_sql.batch
        self._client_sql = client_sql

    @property
    def in_transaction(self) -> bool:
        """The client is inside a transaction block (or a failed one)."""
        return self._session.link.in_transaction

    @property
    def queries(self) -> int:
        """Statements the planner ran here: each drops the client's unnamed prepared statement."""
        return self._simple_queries + self._client_sql.parses

    @property
    def uses_sieve_settings(self) -> bool:
        """False while the session never mentioned sieve.*: nothing to read from it."""
        return self._session.uses_sieve_settings

    def notice(self, message: str) -> None:
        self._session.to_client(messages.notice(message))

    def progress(self, model: str, done: int, total: int | None, elapsed: float) -> None:
        if self.statement is not None:
            self.statement.progress = Progress(model, done, total, elapsed)

    async def arm_statement_timeout(self) -> None:
        """Called before the first expensive step: statement_timeout then counts from the
        statement's start. Cached statements never pay for reading the setting."""
        if self._armed:
            return
        self._armed = True
        timeout = await self.statement_timeout()
        if timeout:
            loop = asyncio.get_running_loop()
            remaining = max(timeout - (loop.time() - self._started), 0.0)
            self._timer = loop.call_later(remaining, self._session.cancel_planned, "statement timeout")

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    async def statement_timeout(self) -> float | None:
        """The session's statement_timeout in seconds (None when off)."""
        try:
            seconds = await self.fetchval(
                "SELECT pg_catalog.date_part('epoch', "
                "pg_catalog.current_setting('statement_timeout')::pg_catalog.interval)::pg_catalog.float8"
            )
        except PlanError:
            return None
        return float(seconds) or None

    async def describe_statement(self, name: str) -> list[int]:
        """Parameter type OIDs of a statement prepared in this session (Describe + Sync)."""
        request = messages.frame(b"D", b"S" + name.encode() + b"\0") + messages.SYNC_MESSAGE
        oids: list[int] = []
        async with contextlib.aclosing(exchange(self._session, request)) as replies:
            async for message in replies:
                if message[0] == ord("t"):
                    (count,) = _SHORT.unpack_from(message, 5)
                    oids = [_LEN.unpack_from(message, 7 + 4 * i)[0] for i in range(count)]
        return oids

    async def run_sql(self, sql: str) -> SqlResult:
        """Simple-protocol SQL (DDL scripts); never while a batch of ``fetch`` is open."""
        self._simple_queries += 1
        return await self.run_request(messages.frame(b"Q", sql.encode() + b"\0"))

    async def run_request(self, request: bytes) -> SqlResult:
        """Send protocol messages ending in Query or Sync; rows, tags and the first error."""
        result = SqlResult()
        async with contextlib.aclosing(exchange(self._session, request)) as replies:
            async for message in replies:
                self._absorb(message, result)
        return result

    def _absorb(self, message: bytes, result: SqlResult) -> None:
        kind, body = message[0], message[5:]
        if kind == ord("D"):
            result.rows.append(list(pgvalues.decode_row(body, pgvalues.TEXT_DECODERS)))
        elif kind == ord("C"):
            result.tags.append(body.rstrip(b"\0").decode())
        elif kind == ord("E") and result.error is None:
            fields = messages.parse_error_fields(body)
            result.error = Failed(
                fields.get("C", sqlstate.INTERNAL_ERROR),
                fields.get("M", ""),
                fields.get("D"),
                fields.get("H"),
            )
        elif kind in (ord("N"), ord("S"), ord("A")):
            self._session.to_client(message)  # notices, parameter changes, notifications


async def run_planned(session: ClientSession, job: PlannedJob) -> None:
    link = session.link
    await link.wait_ready(session.syncs_sent)
    port = SessionPortImpl(session)
    try:
        if job.resets:
            await _reset_after_sync(session, job, port)
            return
        if not job.simple and session.batch_open and await _close_batch(session, port):
            # Postgres failed the batch before this statement: it skips the rest up to the Sync
            _skip_to_sync(session, job)
            return
    except ConnectionError:
        return  # the session is already failing
    activity = session.server.activity
    port.statement = activity.start(session, job.sql, _kind(session, job))
    session.server.metrics.statements[port.statement.kind] += 1
    try:
        await _run_statement(session, job, port)
    finally:
        activity.end(port.statement)


def _kind(session: ClientSession, job: PlannedJob) -> str:
    """What the status page and the statements counter call it: the classifier's reason, but
    "approximate clause" whenever there is one (a model named in it is classified first)."""
    if job.decision is not APPROXIMATE and session.server.classifier.has_clause(job.sql):
        return APPROXIMATE.reason
    return job.decision.reason or "planned"


async def _run_statement(session: ClientSession, job: PlannedJob, port: SessionPortImpl) -> None:
    link = session.link
    if job.malformed is not None:
        # Not a statement to plan. Postgres prepared it: the frames go to Postgres as they came,
        # which answers them as it would a client of its own. Only SieveDB knows it: fail here.
        if job.held:
            with contextlib.suppress(ConnectionError):
                await _fail_unreadable(session, job, port)
            return
        outcome: Outcome | None = Forward()
    else:
        outcome = job.failure or await _plan(session, job, port)
    if outcome is None or session.closed:
        return
    # The backend going away mid-statement has already failed the session.
    with contextlib.suppress(ConnectionError):
        if isinstance(outcome, Forward):
            await _forward(session, job, outcome, port)
        elif isinstance(outcome, Failed):
            await _fail(session, job, outcome, port)
        else:
            session.to_client(_answer(job, outcome, link.status))


async def _plan(session: ClientSession, job: PlannedJob, port: SessionPortImpl) -> Outcome | None:
    """The planner's outcome; None when the session is failing already."""
    loop = asyncio.get_running_loop()
    try:
        if job.held and job.ends_at_flush:
            raise PlanError(
                sqlstate.FEATURE_NOT_SUPPORTED,
                "this statement cannot be prepared: SieveDB runs it, Postgres cannot parse it",
                hint="send it as a simple query (e.g. asyncpg execute() without arguments)",
            )
        params = await _bound_values(job, port)
        planner = await session.server.planners.get(session.database)
        # An extended job's Bind can be pointed at SQL of the planner's own (see _prepare_statement)
        rewritable = job.simple or (not job.held and job.bind() is not None)
        run = planner.run(job.decision, job.sql, port, params, rewritable=rewritable)
        work = loop.create_task(run)
        session.planner_task = work
        return await work
    except asyncio.CancelledError:
        if session.cancel_reason is None or asyncio.current_task().cancelling():
            raise
        return Failed(sqlstate.QUERY_CANCELED, f"canceling statement due to {session.cancel_reason}")
    except PlanError as exc:
        return exc.outcome()
    except ConnectionError:
        return None
    except Exception as exc:  # a planner bug must not take the session down with it
        log.exception("planner failed on statement: %.200s", job.sql)
        return Failed(sqlstate.INTERNAL_ERROR, f"SieveDB internal error: {exc}")
    finally:
        session.planner_task = None
        session.cancel_reason = None
        port.disarm()


async def _fail(session: ClientSession, job: PlannedJob, outcome: Failed, port: SessionPortImpl) -> None:
    link = session.link
    session.server.metrics.error(outcome.sqlstate)
    await _fail_transaction(port, link)
    if job.ends_at_flush:  # no Sync yet: the ReadyForQuery answers the Sync to come
        session.discard_until_sync = True
        session.to_client(_error(outcome))
        return
    session.to_client(_answer(job, outcome, link.status))


async def _fail_unreadable(session: ClientSession, job: PlannedJob, port: SessionPortImpl) -> None:
    """Postgres's answer to a batch with a frame it cannot read: the error, then nothing up to
    the Sync (which ends the skipping even when it has a body of its own)."""
    link = session.link
    await _fail_transaction(port, link)
    session.server.metrics.error(job.malformed.sqlstate)
    session.to_client(_error(Failed(job.malformed.sqlstate, str(job.malformed))))
    if job.frames[-1][0] == messages.SYNC:
        session.to_client(messages.ready_for_query(link.status))
    else:
        session.discard_until_sync = True


async def _close_batch(session: ClientSession, port: SessionPortImpl) -> bool:
    """End the extended batch the client left open before a planned Bind (its Parse, say) with
    a Sync of SieveDB's own, so that the planner may run SQL in the session; pass on what
    Postgres answered to it but the ReadyForQuery. True when Postgres failed the batch."""
    failed = False
    async with contextlib.aclosing(exchange(session, messages.SYNC_MESSAGE)) as replies:
        async for message in replies:
            if message[0] != messages.READY_FOR_QUERY:
                failed = failed or message[0] == messages.ERROR_RESPONSE
                session.server.metrics.error_message(message)
                session.to_client(message)
    session.batch_open = False
    if session.pending_resets:  # a batch ending at Flush ran with settings of its own
        for name in session.pending_resets:
            await port.run_sql(f"RESET {name}")
        session.pending_resets = ()
    return failed


def _skip_to_sync(session: ClientSession, job: PlannedJob) -> None:
    if job.ends_at_flush:
        session.discard_until_sync = True
    else:
        session.to_client(messages.ready_for_query(session.link.status))


async def _forward(session: ClientSession, job: PlannedJob, outcome: Forward, port: SessionPortImpl) -> None:
    link = session.link
    if outcome.sql is not None and job.simple:
        job.frames = [messages.frame(b"Q", outcome.sql.encode() + b"\0")]
    for name, value in outcome.settings.items():
        await port.run_sql(f"SET {name} = '{value}'")
    if not job.simple and not job.held:
        failed = await _prepare_statement(session, job, outcome, port)
        if failed is not None:
            for name in outcome.settings:
                await port.run_sql(f"RESET {name}")
            await _fail(session, job, failed, port)
            return
        session.batch_open = job.syncs == 0
    if (outcome.after is None and not outcome.settings) or job.syncs != 1:
        link.write(b"".join(job.frames))
        session.syncs_sent += job.syncs
        if port.statement is not None and job.syncs:  # listed until Postgres has answered it
            noted = port.statement
            text = noted.text.encode()
            session.forwarded = (noted.id, text, noted.started_at, session.syncs_sent, noted.kind)
        if job.syncs == 0 and outcome.settings:  # a batch ending at Flush: reset at its Sync
            session.pending_resets = tuple(outcome.settings)
        if outcome.after is not None:
            await link.wait_ready(session.syncs_sent)
            await outcome.after()
        return
    # Relay the reply but hold its ReadyForQuery until the settings are reset and the catalog
    # knows what the statement changed: the client's next statement must find both done.
    ready = await _relay_until_ready(session, job)
    for name in outcome.settings:
        await port.run_sql(f"RESET {name}")  # in a failed transaction, its rollback undoes the SET
    if outcome.after is not None:
        await outcome.after()
    link.status = ready[5]  # the client's statement's, not the RESET's
    session.to_client(ready)


async def _prepare_statement(
    session: ClientSession, job: PlannedJob, outcome: Forward, port: SessionPortImpl
) -> Failed | None:
    """Before an extended job's frames go to Postgres, prepare what its Bind names.

    With ``outcome.sql`` (the planner's complete statement, values in place) the Bind is
    rewritten to bind that, prepared as the unnamed statement, with no parameters and the
    client's portal and result formats; the client's own Parse already had its ParseComplete.
    Without, an unnamed statement the planner's queries dropped is prepared again. Parse and
    Sync go in an exchange of their own, so no ParseComplete reaches the client."""
    bind = job.bind()
    if bind is None or job.frames[0][0] != messages.BIND:
        return None
    if outcome.sql is not None:
        request = messages.parse("", outcome.sql)
        job.frames[0] = messages.bind(bind.portal, "", bind.result_formats)
    elif bind.statement == "" and port.queries:
        request = messages.parse("", job.sql, job.param_oids)
    else:
        return None
    result = await port.run_request(request + messages.SYNC_MESSAGE)
    return result.error


async def _reset_after_sync(session: ClientSession, job: PlannedJob, port: SessionPortImpl) -> None:
    """The Sync of a batch whose planned statement ran with settings of its own: the client's
    next statement waits until they are reset."""
    link = session.link
    link.write(b"".join(job.frames))
    session.syncs_sent += job.syncs
    session.batch_open = False
    await link.wait_ready(session.syncs_sent)
    for name in job.resets:
        await port.run_sql(f"RESET {name}")


async def _relay_until_ready(session: ClientSession, job: PlannedJob) -> bytes:
    async with contextlib.aclosing(exchange(session, b"".join(job.frames))) as replies:
        async for message in replies:
            if message[0] == ord("Z"):
                return message
            session.server.metrics.error_message(message)
            session.to_client(message)
    raise ConnectionError("the backing Postgres ended the exchange without ReadyForQuery")


async def exchange(session: ClientSession, request: bytes) -> AsyncIterator[bytes]:
    """Send ``request`` on the client's own backend session and yield Postgres's replies, up to
    and including the ReadyForQuery (whose status the link then holds); none reach the client
    unless the caller passes them on. Meanwhile a cancel goes to Postgres, not the planner."""
    link = session.link
    queue = link.start_capture()
    session.in_backend_sql = True
    try:
        link.write(request)
        while True:
            message = await queue.get()
            if message is None:
                raise ConnectionError("the backing Postgres closed the connection")
            yield message
            if message[0] == ord("Z"):
                link.status = message[5]
                return
    finally:
        session.in_backend_sql = False
        link.stop_capture()


async def _bound_values(job: PlannedJob, port: SessionPortImpl) -> list[ParamText | None] | None:
    bind = job.bind()
    if bind is None or not bind.values:
        return None
    oids = job.param_oids
    unknown = [i for i, f in enumerate(bind.formats) if f == 1 and (i >= len(oids) or oids[i] == 0)]
    if unknown:  # binary values of types the Parse left to Postgres: ask it
        oids = await port.describe_statement(bind.statement)
    return as_text(bind, oids)


async def _fail_transaction(port: SessionPortImpl, link) -> None:
    """Inside a transaction block an error must abort it, as Postgres itself would."""
    if link.in_transaction:
        await port.run_sql("DO $$BEGIN RAISE EXCEPTION 'SieveDB statement failed'; END$$")


def _answer(job: PlannedJob, outcome: Done | Rows | Failed, status: int) -> bytes:
    if isinstance(outcome, Failed):
        return _error(outcome) + messages.ready_for_query(status)
    if job.simple and isinstance(outcome, Rows):
        body = messages.row_description(outcome.columns) + b"".join(
            messages.data_row(r) for r in outcome.rows
        )
        return body + messages.command_complete(outcome.tag) + messages.ready_for_query(status)
    if job.simple:
        return messages.command_complete(outcome.tag) + messages.ready_for_query(status)
    bind = job.bind()
    formats = bind.result_formats if bind is not None else ()
    return b"".join(_extended_reply(frame, outcome, formats, status) for frame in job.frames)


def _error(outcome: Failed) -> bytes:
    return messages.error_response(
        outcome.sqlstate, outcome.message, detail=outcome.detail, hint=outcome.hint
    )


def _extended_reply(frame: bytes, outcome: Done | Rows, formats: tuple[int, ...], status: int) -> bytes:
    """The reply to one held frame of a statement the planner answered itself. Its own rows are
    text, whose binary format is the same bytes: any result format the Bind asked for holds."""
    kind = frame[0]
    rows = outcome if isinstance(outcome, Rows) else None
    if kind == messages.PARSE:
        return messages.frame(b"1", b"")
    if kind == messages.BIND:
        return messages.frame(b"2", b"")
    if kind == messages.DESCRIBE:
        statement = frame[5] == ord("S")
        no_params = messages.frame(b"t", b"\0\0") if statement else b""
        if rows is None:
            return no_params + messages.frame(b"n", b"")
        return no_params + messages.row_description(rows.columns, () if statement else formats)
    if kind == messages.EXECUTE:
        data = b"".join(messages.data_row(r) for r in rows.rows) if rows is not None else b""
        return data + messages.command_complete(outcome.tag)
    if kind == messages.CLOSE:
        return messages.frame(b"3", b"")
    if kind == messages.SYNC:
        return messages.ready_for_query(status)
    return b""
