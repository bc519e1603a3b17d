"""The planner's SQL, run in the client's own backend session.

Every query the planner derives from a client's statement (the inputs a model call reaches,
LIMIT checks, candidate rows, proxies, result types) runs here, so Postgres applies the client's
role, database, search_path, row-level security and transaction: a role sees exactly what it
would see by itself. Only SieveDB's own fixed statements run on its privileged pools.

Queries go over the extended protocol inside one batch, ended by a Sync when the outermost user
is done: when the client is idle that batch is one implicit transaction (one snapshot, and
``set_config(..., true)`` lasts until the Sync); inside the client's transaction block it is
part of that block, and a failure aborts the block as the client's statement would have.
Streams use named portals with a row limit per Execute, so the planner can run a model on one
chunk while Postgres waits, and run other queries in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.outcome import PlanError
from server import messages, pgvalues, sqlstate

if TYPE_CHECKING:
    from server.session import ClientSession

_SHORT = struct.Struct("!h")
_INT = struct.Struct("!i")
_ASYNC = frozenset(b"NSA")  # notices, parameter changes, notifications: the client's to see
_FLUSH = messages.frame(b"H", b"")
_LENIENT_ON = (
    "SELECT pg_catalog.current_setting('sieve.lenient', true), "
    "pg_catalog.set_config('sieve.lenient', 'on', true)"
)
_LENIENT_RESTORE = "SELECT pg_catalog.set_config('sieve.lenient', $1, true)"
_TYPE_NAMES = (
    "SELECT t.oid, n.nspname, t.typname FROM pg_catalog.pg_type t "
    "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = ANY($1::pg_catalog.oid[])"
)
_BUILTIN_OIDS = 16384  # FirstNormalObjectId: types below it are the same in every database


@dataclass(frozen=True)
class ColumnType:
    oid: int
    schema: str
    name: str  # the type's name, e.g. float4
    column: str = ""  # the result column's name


class ClientSql:
    def __init__(self, session: ClientSession) -> None:
        self._session = session
        self._depth = 0
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task | None = None
        self._queue = None
        self._error: PlanError | None = None
        self._in_block = False
        self._lenient_before: str | None | bool = False  # False: not set in this batch
        self._portals = 0
        self.parses = 0  # statements prepared unnamed: the client's unnamed statement is gone
        self._type_names: dict[int, ColumnType] = {}

    # -- public -----------------------------------------------------------------------------

    async def fetch(self, sql: str, args: tuple = (), *, lenient: bool = False) -> list[tuple]:
        async with self.batch():
            if lenient:
                await self._lenient()
            decoders, formats = await self._prepare(sql, len(args))
            self._send(_bind("", args, formats) + _execute("", 0) + _FLUSH)
            rows, _ = await self._rows(decoders, bound=True)
        return rows

    async def fetchval(self, sql: str, args: tuple = (), *, lenient: bool = False) -> object:
        rows = await self.fetch(sql, args, lenient=lenient)
        return rows[0][0] if rows else None

    @contextlib.asynccontextmanager
    async def stream(
        self, sql: str, args: tuple = (), *, chunk_rows: int = 1024, lenient: bool = False
    ) -> AsyncIterator[AsyncIterator[list[tuple]]]:
        """``async with port.stream(sql) as chunks: async for rows in chunks: ...``"""
        async with self.batch():
            if lenient:
                await self._lenient()
            decoders, formats = await self._prepare(sql, len(args))
            self._portals += 1
            portal = f"sieve_stream_{self._portals}"
            self._send(_bind(portal, args, formats) + _execute(portal, chunk_rows) + _FLUSH)
            done = False

            async def chunks() -> AsyncIterator[list[tuple]]:
                nonlocal done
                bound = True
                while not done:
                    rows, done = await self._rows(decoders, bound=bound)
                    bound = False
                    yield rows
                    if not done:
                        self._send(_execute(portal, chunk_rows) + _FLUSH)

            try:
                yield chunks()
            finally:
                if not done and self._error is None and self._queue is not None:
                    # stopped early: close the portal so Postgres forgets its rows now
                    self._send(_close_portal(portal) + _FLUSH)
                    await self._drain_portal()

    async def column_types(self, sql: str) -> list[ColumnType]:
        """Result column types of ``sql``, prepared in the client's session but not run."""
        async with self.batch():
            columns = await self._describe(sql, 0)
            oids = [oid for _, oid in columns]
            unknown = sorted({o for o in oids if o not in self._type_names})
            fresh = {}
            if unknown:
                for oid, schema, name in await self.fetch(_TYPE_NAMES, (unknown,)):
                    fresh[oid] = ColumnType(oid, schema, name)
            # built-in types are the same everywhere; user types may change: asked each time
            self._type_names.update({o: t for o, t in fresh.items() if o < _BUILTIN_OIDS})
            found = []
            for column, oid in columns:
                known = self._type_names.get(oid) or fresh[oid]
                found.append(ColumnType(oid, known.schema, known.name, column))
        return found

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Group queries in one batch (one implicit transaction when the client is idle).
        Batches of other tasks (an oracle called from a thread, say) wait their turn."""
        task = asyncio.current_task()
        if self._owner is not task:
            await self._lock.acquire()
            self._owner = task
            self._begin()
        self._depth += 1
        try:
            if self._error is not None:
                raise self._error
            yield
        finally:
            try:
                if self._depth == 1:  # the outermost user: end the batch (it may still query)
                    await self._end()
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._owner = None
                    self._lock.release()

    # -- the batch ----------------------------------------------------------------------------

    def _begin(self) -> None:
        link = self._session.link
        self._queue = link.start_capture()
        self._in_block = link.in_transaction
        self._error = None
        self._lenient_before = False

    async def _end(self) -> None:
        link = self._session.link
        try:
            if self._in_block and self._lenient_before is not False and self._error is None:
                # inside the client's transaction block a local setting would outlive the batch
                with contextlib.suppress(PlanError):
                    await self.fetch(_LENIENT_RESTORE, (self._lenient_before or "",))
            link.write(messages.SYNC_MESSAGE)
            await self._drain_to_ready()
        finally:
            link.stop_capture()
            self._queue = None
            self._error = None

    async def _drain_to_ready(self) -> None:
        """Skip whatever Postgres still sends for this batch (rows of an Execute cut short,
        an error) up to the ReadyForQuery that answers our Sync."""
        link = self._session.link
        while True:
            message = await self._queue.get()
            if message is None:
                raise ConnectionError("the backing Postgres closed the connection")
            if message[0] in _ASYNC:
                self._session.to_client(message)
            elif message[0] == messages.READY_FOR_QUERY:
                link.status = message[5]
                return

    async def _lenient(self) -> None:
        """Unmaterialized outputs read as NULL for the rest of this batch (LIMIT checks,
        candidate rows): the planner's own guards decide which of them count."""
        if self._lenient_before is not False:
            return
        rows = await self.fetch(_LENIENT_ON)
        self._lenient_before = rows[0][0]

    async def _prepare(self, sql: str, nparams: int) -> tuple[list[Callable], list[int]]:
        """Prepare ``sql`` unnamed: decoders and result formats of its columns."""
        oids = [oid for _, oid in await self._describe(sql, nparams)]
        formats = [pgvalues.result_format(o) for o in oids]
        return [pgvalues.decoder(o, f) for o, f in zip(oids, formats, strict=True)], formats

    async def _describe(self, sql: str, nparams: int) -> list[tuple[str, int]]:
        """Parse ``sql`` as the unnamed statement and Describe it: (name, type OID) per column."""
        self.parses += 1
        self._send(messages.parse("", sql, [0] * nparams) + _describe_statement() + _FLUSH)
        await self._next_of(ord("1"))
        await self._next_of(ord("t"))
        return _row_columns(await self._next_of(ord("T"), ord("n")))

    async def _rows(self, decoders: list, *, bound: bool) -> tuple[list[tuple], bool]:
        """DataRows up to PortalSuspended (False) or CommandComplete (True)."""
        if bound:
            await self._next_of(ord("2"))
        rows, decode = [], pgvalues.decode_row
        while True:
            message = await self._next()
            kind = message[0]
            if kind == ord("D"):
                rows.append(decode(message[5:], decoders))
            elif kind == ord("s"):
                return rows, False
            elif kind in (ord("C"), ord("I")):
                return rows, True
            else:
                raise self._unexpected(message)

    async def _drain_portal(self) -> None:
        while (await self._next())[0] != ord("3"):
            pass

    async def _next_of(self, *kinds: int) -> bytes:
        message = await self._next()
        if message[0] not in kinds:
            raise self._unexpected(message)
        return message

    def _unexpected(self, message: bytes) -> PlanError:
        self._error = PlanError(
            sqlstate.INTERNAL_ERROR, f"unexpected message {chr(message[0])!r} from the backing Postgres"
        )
        return self._error

    async def _next(self) -> bytes:
        """The next reply that is not for the client; an ErrorResponse is raised."""
        session = self._session
        while True:
            session.in_backend_sql = True  # a cancel now goes to Postgres
            try:
                message = await self._queue.get()
            finally:
                session.in_backend_sql = False
            if message is None:
                raise ConnectionError("the backing Postgres closed the connection")
            kind = message[0]
            if kind in _ASYNC:
                session.to_client(message)
                continue
            if kind == messages.ERROR_RESPONSE and self._error is None:
                fields = messages.parse_error_fields(message[5:])
                self._error = PlanError(
                    fields.get("C", sqlstate.INTERNAL_ERROR),
                    fields.get("M", ""),
                    detail=fields.get("D"),
                    hint=fields.get("H"),
                )
                raise self._error
            return message

    def _send(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._session.link.write(data)


def _describe_statement() -> bytes:
    return messages.frame(b"D", b"S\0")


def _execute(portal: str, max_rows: int) -> bytes:
    return messages.frame(b"E", portal.encode() + b"\0" + _INT.pack(max_rows))


def _close_portal(portal: str) -> bytes:
    return messages.frame(b"C", b"P" + portal.encode() + b"\0")


def _bind(portal: str, args: tuple, result_formats: list[int]) -> bytes:
    body = bytearray(portal.encode() + b"\0\0")  # portal, the unnamed statement
    body += _SHORT.pack(0) + _SHORT.pack(len(args))  # parameters in text
    for value in args:
        raw = pgvalues.encode_text_param(value)
        body += _INT.pack(-1) if raw is None else _INT.pack(len(raw)) + raw
    body += _SHORT.pack(len(result_formats))
    body += b"".join(_SHORT.pack(f) for f in result_formats)
    return messages.frame(b"B", bytes(body))


def _row_columns(message: bytes) -> list[tuple[str, int]]:
    """(name, type OID) of each column of a RowDescription ('T'); none for NoData ('n')."""
    if message[0] != ord("T"):
        return []
    (count,) = _SHORT.unpack_from(message, 5)
    pos, columns = 7, []
    for _ in range(count):
        end = message.index(0, pos)
        name = message[pos:end].decode("utf-8", "replace")
        columns.append((name, _INT.unpack_from(message, end + 7)[0]))
        pos = end + 19
    return columns
