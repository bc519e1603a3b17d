"""One client connection: startup, authentication relay, then framed forwarding.

The session frames what the client sends (to enforce limits and show every statement to the
classifier) and writes whole runs of frames to its own backend session in one call; what Postgres
sends back is passed through unparsed once the session is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import logging
import socket
import struct
from time import time as now
from typing import TYPE_CHECKING

from planner.approx.clause import clause_param_types, split_clause
from planner.classify import APPROXIMATE, SIEVE_SETTING, Route
from planner.outcome import Failed, PlanError
from planner.setting_names import review as review_settings
from server import frames, messages, sqlstate, startup, tls
from server.activity import TEXT_LIMIT, next_id
from server.backend import BackendLink
from server.params import parse_param_types
from server.planned import PlannedJob, PreparedPlan, cstrings, run_planned

if TYPE_CHECKING:
    from server.app import SieveServer

log = logging.getLogger("sievedb.server.session")

_LEN = struct.Struct("!I")
SYNTAX_ERROR = "42601"
HOLD_LIMIT = 1 << 20  # stop reading a client whose pipelined messages pile up behind a planned one
_OPENS_BATCH = frozenset(b"PBDECH")  # extended-protocol frames: Postgres answers them at a Sync
_CLOSES_BATCH = frozenset(b"QSF")


TRIM_AFTER_BYTES = 16 << 20  # a buffer this large was grown in steps: glibc keeps the heap


def return_free_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc keeps them after a big buffer grew by
    reallocation under a fragmented heap). Elsewhere there is nothing to do."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class ProtocolViolation(Exception):
    pass


class State(enum.Enum):
    STARTUP = "startup"
    TLS_HANDSHAKE = "tls"
    CONNECTING = "connecting"
    AUTH = "auth"
    READY = "ready"
    BUSY = "busy"  # the planner runs a statement; later client messages wait in order
    CLOSED = "closed"


class ClientSession(asyncio.Protocol):
    def __init__(self, server: SieveServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.state = State.STARTUP
        self.inbuf = bytearray()
        self.link: BackendLink | None = None
        self.peer = "?"
        self.user = ""
        self.database = ""
        self.tls = False
        self.cancel_key: tuple[int, bytes] | None = None
        self.backend_key: tuple[int, bytes] | None = None
        self._terminating = False
        self._refused = False
        self.syncs_sent = 0  # Query/Sync/FunctionCall frames forwarded: each earns a ReadyForQuery
        self.planned_statements: dict[str, PreparedPlan] = {}
        self.forwarded: tuple | None = None  # the last Query forwarded as it is (server.activity)
        self.job: PlannedJob | None = None
        self.planner_task: asyncio.Task | None = None  # the planner working on the held statement
        self.cancel_reason: str | None = None
        self.in_backend_sql = False  # the planner is running SQL in this session's backend
        self.discard_until_sync = False  # an extended batch failed before its Sync arrived
        self.batch_open = False  # extended frames went to Postgres since the last Sync
        self.pending_resets: tuple[str, ...] = ()  # settings to RESET once the client's Sync ran
        self.uses_sieve_settings = False  # the session said "sieve." (SET sieve.recall_target ...)
        self._paused = False
        # Until Postgres says AuthenticationOk a frame is a password or SASL message at most.
        self.frame_limit = messages.AUTH_MAX_LEN
        self.small_frame_limit = min(messages.SMALL_FRAME_MAX_LEN, self.frame_limit)
        self.admitted = False  # counted against --max-connections (it spends a backend)
        self._startup_packets = 0
        self._deadline: asyncio.TimerHandle | None = None  # authentication_timeout

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        transport.set_write_buffer_limits(high=512 * 1024)  # type: ignore[attr-defined]
        if len(self.server.sessions) >= self.server.socket_limit:
            # Sockets that never finish their startup are bounded too (each holds a descriptor
            # for up to authentication_timeout): refuse at once, reading nothing.
            self.state = State.CLOSED
            transport.write(messages.fatal(sqlstate.TOO_MANY_CONNECTIONS, "sorry, too many clients already"))
            transport.close()
            return
        self.server.sessions.add(self)
        self._deadline = asyncio.get_running_loop().call_later(
            self.server.config.authentication_timeout, self._authentication_timeout
        )

    def data_received(self, data: bytes) -> None:
        if self.state is State.READY or self.state is State.AUTH:
            self._relay_frontend(data)
        elif self.state is State.STARTUP:
            if not self._startup_packets and not self.inbuf and data[0] == messages.TLS_HANDSHAKE:
                self._direct_tls(data)
                return
            self.inbuf += data
            self._drive_startup()
        elif self.state is State.BUSY:
            self.inbuf += data  # relayed once the planner is done with the held statement
            if not self.job.started:
                self._collect()
            elif len(self.inbuf) > HOLD_LIMIT:
                self.pause_client_reading()
        elif self.state is State.TLS_HANDSHAKE:
            # Decrypted bytes the TLS layer delivers as the handshake completes, before
            # _upgrade_tls resumes (the startup packet often travels with the client's Finished).
            self.inbuf += data
        elif self.state is State.CONNECTING:
            self.inbuf += data  # relayed once the backend link is up
            if len(self.inbuf) > 5 + messages.AUTH_MAX_LEN:
                self._violation(b"", 0, "invalid message length before authentication")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = State.CLOSED
        self.cancel_planned("client disconnect")  # stop work nobody will read
        self._release()
        if self.link is not None:
            if not self._terminating:
                self.link.write(messages.frame(b"X", b""))
            self.link.close()

    def _release(self) -> None:
        """Give back what a closed session holds: its place in the server's counts, its timer
        (whose callback would keep it alive) and its buffers (up to --max-message-bytes)."""
        self.server.forget(self)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        large = len(self.inbuf) >= TRIM_AFTER_BYTES
        self.inbuf = bytearray()
        self.planned_statements = {}
        if self.link is not None:
            self.link.release()
        if large:
            return_free_memory()

    def pause_writing(self) -> None:
        if self.link is not None and self.link.transport is not None:
            self.link.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.link is not None and self.link.transport is not None:
            self.link.transport.resume_reading()

    # -- startup ------------------------------------------------------------------------------

    def _drive_startup(self) -> None:
        try:
            while self.state is State.STARTUP:
                packet = startup.split_packet(self.inbuf)
                if packet is None:
                    return
                self._startup_packets += 1
                self._on_startup_packet(startup.decode(packet))
        except startup.StartupError as exc:
            self.fail(exc.sqlstate, str(exc))

    def _on_startup_packet(self, packet: startup.Packet) -> None:
        if isinstance(packet, startup.SSLRequest):
            self._answer_ssl()
        elif isinstance(packet, startup.GSSENCRequest):
            self._write(b"N")
        elif isinstance(packet, startup.CancelRequest):
            self.server.request_cancel(packet.pid, packet.key)
            self.state = State.CLOSED
            self.transport.close()
        else:
            self._begin(packet)

    def _answer_ssl(self) -> None:
        if self.inbuf:
            # Bytes sent before the handshake could be injected by a man in the middle.
            raise startup.StartupError(
                sqlstate.PROTOCOL_VIOLATION, "received unencrypted data after SSL request"
            )
        if self.server.ssl_context is None or self.tls:
            self._write(b"N")
            return
        self._write(b"S")
        self.transport.pause_reading()
        self.state = State.TLS_HANDSHAKE
        asyncio.get_running_loop().create_task(self._upgrade_tls())

    def _direct_tls(self, client_hello: bytes) -> None:
        """A TLS ClientHello in place of the first startup packet (PostgreSQL 17's
        sslnegotiation=direct)."""
        if self.server.ssl_context is None:
            # Postgres closes without a word too: the client expects TLS, not a plaintext error.
            log.info("direct TLS connection refused peer=%s: TLS is not configured", self.peer)
            self.state = State.CLOSED
            self._release()
            self.transport.abort()
            return
        self.state = State.TLS_HANDSHAKE
        asyncio.get_running_loop().create_task(self._upgrade_tls(client_hello))

    async def _upgrade_tls(self, client_hello: bytes | None = None) -> None:
        loop = asyncio.get_running_loop()
        try:
            if client_hello is None:
                self.transport = await loop.start_tls(
                    self.transport, self, self.server.ssl_context, server_side=True
                )
            else:
                self.transport = await tls.wrap_server_side(
                    self.transport, self, self.server.ssl_context, client_hello
                )
        except (OSError, ConnectionError, asyncio.CancelledError) as exc:
            log.info("tls handshake failed peer=%s error=%s", self.peer, exc)
            if self.transport is not None:
                self.transport.abort()
            return
        if self.state is not State.TLS_HANDSHAKE:
            self.transport.abort()  # timed out or shut down meanwhile
            return
        self.tls = True
        self.state = State.STARTUP
        if client_hello is not None and tls.negotiated_alpn(self.transport) != tls.ALPN:
            self.fail(
                sqlstate.PROTOCOL_VIOLATION,
                "received direct SSL connection request without ALPN protocol negotiation extension",
            )
        elif self.inbuf:
            self._drive_startup()

    def _begin(self, packet: startup.StartupMessage) -> None:
        if packet.major != 3:
            # Postgres rejects these too; say it ourselves so no backend is spent on it.
            self.fail(
                sqlstate.FEATURE_NOT_SUPPORTED,
                f"unsupported frontend protocol {packet.major}.{packet.minor}: server supports 3.0 to 3.2",
            )
            return
        self.user = packet.params.get("user", "")
        self.database = packet.params.get("database", self.user)
        self.uses_sieve_settings = "sieve." in packet.params.get("options", "")
        if not self.user:
            self.fail(sqlstate.INVALID_AUTHORIZATION, "no PostgreSQL user name specified in startup packet")
            return
        # Postgres's order: a full house is refused before any pg_hba.conf rule is looked at.
        if not self.server.admit(self):
            log.info("connection refused peer=%s user=%s: too many clients", self.peer, self.user)
            self.fail(sqlstate.TOO_MANY_CONNECTIONS, "sorry, too many clients already")
            return
        if self.server.config.tls_require and not self.tls:
            host = self.peer.rsplit(":", 1)[0]
            self.fail(
                sqlstate.INVALID_AUTHORIZATION,
                f'no pg_hba.conf entry for host "{host}", user "{self.user}", '
                f'database "{self.database}", no encryption',
            )
            return
        self.state = State.CONNECTING
        asyncio.get_running_loop().create_task(self._connect_backend(packet))

    async def _connect_backend(self, packet: startup.StartupMessage) -> None:
        loop = asyncio.get_running_loop()
        target = self.server.backend_target
        try:
            if target.is_unix:
                _, link = await loop.create_unix_connection(lambda: BackendLink(self), target.socket_path)
            else:
                _, link = await loop.create_connection(lambda: BackendLink(self), target.host, target.port)
        except OSError as exc:
            log.warning(
                "backend connect failed peer=%s target=%s error=%s", self.peer, target.describe(), exc
            )
            self.fail(sqlstate.CONNECTION_FAILURE, f"could not connect to the backing Postgres: {exc}")
            return
        if self.state is State.CLOSED:
            link.close()
            return
        self.link = link
        link.write(packet.raw)
        self.state = State.AUTH
        if self.inbuf:
            pending = bytes(self.inbuf)
            self.inbuf.clear()
            self._relay_frontend(pending)

    def on_startup_reply(self, kind: int, message: bytes) -> None:
        """A framed message from Postgres before the first ReadyForQuery."""
        if kind == messages.BACKEND_KEY_DATA:
            self._swap_key(message)
            return
        self._write(message)
        if kind == messages.AUTHENTICATION and message[5:9] == b"\0\0\0\0":  # AuthenticationOk
            self.frame_limit = self.server.max_message_bytes
            self.small_frame_limit = min(messages.SMALL_FRAME_MAX_LEN, self.frame_limit)
        elif kind == messages.READY_FOR_QUERY:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self.state = State.READY
            self.link.start_passthrough()
            log.info("session ready peer=%s user=%s tls=%s", self.peer, self.user, self.tls)
        elif kind == messages.ERROR_RESPONSE:
            self._refused = True
            fields = messages.parse_error_fields(message[5:])
            log.info("startup refused peer=%s user=%s sqlstate=%s", self.peer, self.user, fields.get("C"))

    def _swap_key(self, message: bytes) -> None:
        (backend_pid,) = _LEN.unpack_from(message, 5)
        backend_secret = message[9:]
        self.backend_key = (backend_pid, backend_secret)
        # Keep Postgres's pid (clients match it against pg_backend_pid() and notifications);
        # only the secret is ours, so a cancel must come through SieveDB's table.
        own = self.server.register_cancel_key(self, backend_pid, len(backend_secret))
        self.cancel_key = own
        self._write(messages.backend_key_data(own[0], own[1]))

    # -- forwarding ---------------------------------------------------------------------------

    def _relay_frontend(self, data: bytes) -> None:
        pending: bytes | None = data
        while pending:
            pending = self._relay_chunk(pending)

    def _relay_chunk(self, data: bytes) -> bytes | None:
        """Forward the whole frames of ``data`` (after what ``inbuf`` holds); return bytes still
        to relay when a frame had to be replaced on the way."""
        if self.inbuf:
            checked = len(self.inbuf) >= 5  # a frame's header was checked when it was kept
            self.inbuf += data
            view: bytes | bytearray = self.inbuf
            if checked and _LEN.unpack_from(view, 1)[0] >= len(view):
                return None  # that frame is still incomplete: no need to scan it again
        else:
            view = data
        # One scan of the whole chunk decides whether any statement in it needs a closer look.
        inspect = self.server.classifier.may_plan(view) or bool(self.planned_statements)
        pos, size, last = 0, len(view), -1
        parse = None  # (start, end) of the last Parse forwarded in this chunk: its text names a Sync
        small, types, unpack = self.small_frame_limit, messages.FRONTEND_TYPES, _LEN.unpack_from
        try:
            while size - pos >= 5:
                kind = view[pos]
                length = unpack(view, pos + 1)[0]
                if kind not in types or length < 4 or length > small:
                    self._frame_end(view, pos, size)  # raises with the precise complaint
                end = pos + 1 + length
                if end > size:
                    break
                if self.discard_until_sync:
                    return self._discard(view, pos, end, last)
                if kind == messages.QUERY:
                    job = self._route(kind, view, pos, end) if inspect else None
                    if isinstance(job, bytes):  # a Query forwarded in another form (sieve.* settings)
                        self.syncs_sent += 1
                        return self._replace(view, pos, end, job)
                    if job is not None:
                        return self._hold(view, pos, job, last)
                    self.syncs_sent += 1
                    self._note_forwarded_query(view, pos, end)
                elif kind == messages.SYNC or kind == messages.FUNCTION_CALL:
                    if self.pending_resets and kind == messages.SYNC:
                        job = PlannedJob.resetting(self.pending_resets)
                        self.pending_resets = ()
                        return self._hold(view, pos, job, last)
                    self.syncs_sent += 1
                    self._note_forwarded_sync(view, parse)
                elif inspect and (kind == messages.PARSE or kind == messages.BIND):
                    job = self._route(kind, view, pos, end)
                    if isinstance(job, bytes):
                        return self._replace(view, pos, end, job)
                    if job is not None:
                        return self._hold(view, pos, job, last)
                    parse = (pos, end) if kind == messages.PARSE else parse
                elif kind == messages.PARSE:
                    parse = (pos, end)
                elif inspect and kind == messages.CLOSE and self.planned_statements:
                    # A closed statement is planned no more (a Close Postgres cannot read closes nothing).
                    if view[pos + 5] == ord("S") and frames.malformed(view, pos, end) is None:
                        self.planned_statements.pop(cstrings(view, pos + 6, end, 1)[0], None)
                elif kind == messages.TERMINATE:
                    self._terminating = True
                last = kind
                pos = end
        except ProtocolViolation as exc:
            return self._violation(view, pos, str(exc))
        self._note_forwarded(last)
        self._flush_frontend(view, pos)
        return None

    def _note_forwarded_query(self, view: bytes | bytearray, pos: int, end: int) -> None:
        """A Query forwarded as it is: listed as running until Postgres answers it (see
        server.activity; its text is decoded only when listed) and counted."""
        text = view[pos + 5 : min(end - 1, pos + 5 + TEXT_LIMIT)]
        self.forwarded = (next_id(), text, now(), self.syncs_sent, "forwarded")
        self.server.metrics.statements["forwarded"] += 1

    def _note_forwarded_sync(self, view: bytes | bytearray, parse: tuple[int, int] | None) -> None:
        """An extended batch (or FunctionCall) forwarded as it is: listed as running until
        Postgres answers its Sync, named by the batch's last Parse when the chunk holds one."""
        text = b""
        if parse is not None:
            start, end = parse
            name_end = view.find(0, start + 5, end)
            stop = view.find(0, name_end + 1, end) if name_end >= 0 else -1
            text = view[name_end + 1 : min(stop, name_end + 1 + TEXT_LIMIT)] if stop >= 0 else b""
        self.forwarded = (next_id(), text or b"(a prepared statement)", now(), self.syncs_sent, "forwarded")
        self.server.metrics.statements["forwarded"] += 1

    def _note_forwarded(self, kind: int) -> None:
        """Remember whether the last frame forwarded left an extended batch open (no Sync yet)."""
        if kind in _OPENS_BATCH:
            self.batch_open = True
        elif kind in _CLOSES_BATCH:
            self.batch_open = False

    def _frame_end(self, view: bytes | bytearray, pos: int, size: int) -> int | None:
        """End offset of the frame at ``pos``; None while incomplete; raises on a bad header.

        Lengths are Postgres's limits, checked at the header before anything is buffered: 64 KiB
        before authentication, 10,000 bytes for the small types, --max-message-bytes else."""
        kind = view[pos]
        (length,) = _LEN.unpack_from(view, pos + 1)
        if kind not in messages.FRONTEND_TYPES:
            raise ProtocolViolation(f"invalid frontend message type {kind}")
        limit = self.small_frame_limit if kind in messages.SMALL_TYPES else self.frame_limit
        if length < 4 or length > limit:
            raise ProtocolViolation(f"invalid message length {length} for message type {kind}")
        end = pos + 1 + length
        return end if end <= size else None

    def _route(self, kind: int, view: bytes | bytearray, pos: int, end: int) -> PlannedJob | bytes | None:
        """Return a job when this frame starts work for the planner, or the frame to forward in
        its place (a Parse without its approximate clause); None to forward it as it is.

        A frame Postgres could not read is no statement: it goes to Postgres, which answers it
        as it answers any malformed message (ERROR 08P01, skip to Sync, the session kept)."""
        if frames.malformed(view, pos, end) is not None:
            return None
        if kind == messages.BIND:
            if self.planned_statements:
                statement = cstrings(view, pos + 5, end, 2)[1]
                if statement in self.planned_statements:
                    return PlannedJob.extended(self.planned_statements[statement])
            return None
        if kind == messages.QUERY:
            decision = self.server.classifier.classify(view[pos + 5 : end - 1])
            self._note_settings(decision, view[pos + 5 : end - 1])
            replaced = self._setting_names(decision, view, pos, end)
            if replaced is not None or decision.route is Route.FORWARD:
                return replaced
            return PlannedJob.simple(decision, cstrings(view, pos + 5, end, 1)[0])
        name_end = view.index(0, pos + 5, end)
        decision = self.server.classifier.classify(view[name_end + 1 : view.index(0, name_end + 1, end)])
        self._note_settings(decision, view[pos + 5 : end])
        replaced = self._setting_names(decision, view, pos, end)
        if replaced is not None or decision.route is Route.FORWARD:
            if self.planned_statements:
                self.planned_statements.pop(bytes(view[pos + 5 : name_end]).decode(), None)
            return replaced
        name, sql = cstrings(view, pos + 5, end, 2)
        oids = parse_param_types(bytes(view[pos:end]))
        if decision.executes_itself:
            # Postgres cannot parse it (LANGUAGE onnx): hold it whole.
            return PlannedJob.extended(decision, sql, held=True)
        # split_clause has a fast path of its own: it scans only text that may carry a clause (a
        # misspelt one too, which the classifier's pattern may not see).
        try:
            body, clause = split_clause(sql)
        except Exception as exc:  # an invalid clause: the Parse fails, as a syntax error would
            # (PlanError, or the scanner's own complaint about a token, e.g. "80O")
            failure = exc.outcome() if isinstance(exc, PlanError) else Failed(SYNTAX_ERROR, str(exc))
            self.planned_statements.pop(name, None)
            return PlannedJob.extended(decision, sql, held=True, failure=failure)
        if clause is not None:
            # Postgres cannot parse the approximate clause: it prepares the statement without it
            # (so it describes parameters and columns itself); each Bind goes to the planner.
            # Parameters only the clause uses (BUDGET $1) are declared, or Postgres could not
            # type them; their values are read by the planner (clause.bind_clause).
            oids = clause_param_types(clause, oids)
            self.planned_statements[name] = PreparedPlan(decision, sql, oids)
            return messages.parse(name, body, oids)
        # Postgres can parse it (the model's SQL function exists); inputs are made at Bind.
        self.planned_statements[name] = PreparedPlan(decision, sql, oids)
        return None

    def _setting_names(self, decision, view: bytes | bytearray, pos: int, end: int) -> bytes | None:
        """A Query or Parse naming an unknown sieve.* setting, or SHOWing a known one, in the form
        Postgres answers as SieveDB means it (see planner.setting_names); None: as it is. Names
        ending in "target" look like approximate clauses to the classifier: those count too."""
        if decision is not SIEVE_SETTING and decision is not APPROXIMATE:
            return None
        query = view[pos] == messages.QUERY
        name, sql = ("", cstrings(view, pos + 5, end, 1)[0]) if query else cstrings(view, pos + 5, end, 2)
        if decision is APPROXIMATE and (
            "sieve." not in sql.lower() or self.server.classifier.has_clause(sql)
        ):
            return None
        sql = review_settings(sql)
        if sql is None:
            return None
        return (
            messages.frame(b"Q", sql.encode() + b"\0")
            if query
            else messages.parse(name, sql, parse_param_types(bytes(view[pos:end])))
        )

    def _discard(self, view: bytes | bytearray, pos: int, end: int, last: int) -> bytes | None:
        """After an error the server raised itself mid-batch, drop messages up to the Sync,
        answer that with ReadyForQuery, and go on with the rest (Postgres's own rule)."""
        head, rest = bytes(view[:pos]), bytes(view[end:])
        self.inbuf.clear()
        if head:
            self._note_forwarded(last)
            self.link.write(head)
        if view[pos] == messages.SYNC:
            self.discard_until_sync = False
            self.to_client(messages.ready_for_query(self.link.status))
        return rest or None

    def _replace(self, view: bytes | bytearray, pos: int, end: int, frame: bytes) -> bytes | None:
        """Forward what precedes the frame at ``pos``, then ``frame`` in its place."""
        head, rest = bytes(view[:pos]), bytes(view[end:])
        self.inbuf.clear()
        self.link.write(head + frame)
        self._note_forwarded(frame[0])
        return rest or None

    def _note_settings(self, decision, sql: bytes | bytearray) -> None:
        if decision is SIEVE_SETTING or (decision.route is Route.PLAN and b"sieve." in bytes(sql).lower()):
            self.uses_sieve_settings = True

    def _hold(self, view: bytes | bytearray, pos: int, job: PlannedJob, last: int) -> None:
        """Forward what precedes a planned statement, then keep the rest until the job is done."""
        head, rest = bytes(view[:pos]), bytes(view[pos:])
        self.inbuf.clear()
        if head:
            self._note_forwarded(last)
            self.link.write(head)
        self.inbuf += rest
        self.state = State.BUSY
        self.job = job
        self._collect()

    def _collect(self) -> None:
        """Gather the held job's frames (through Sync for extended ones), then start it. Each
        frame moves from ``inbuf`` to the job once whole (its frames may come in many reads)."""
        view, pos, size = self.inbuf, 0, len(self.inbuf)
        try:
            while size - pos >= 5:
                end = self._frame_end(view, pos, size)
                if end is None:
                    break
                frame = bytes(view[pos:end])
                if self.job.malformed is None:
                    self.job.malformed = frames.malformed(frame)
                done = self.job.take(view[pos], frame)
                pos = end
                if done:
                    del view[:pos]
                    self.job.started = True
                    asyncio.get_running_loop().create_task(self._run_job(self.job))
                    return
        except ProtocolViolation as exc:
            return self._violation(b"", 0, str(exc))
        del view[:pos]  # reading goes on: pausing here would starve the job of its Sync

    async def _run_job(self, job: PlannedJob) -> None:
        await run_planned(self, job)
        if self.state is not State.BUSY:
            return
        self.state = State.READY
        self.job = None
        self.resume_client_reading()
        if self.inbuf:
            pending = bytes(self.inbuf)
            self.inbuf.clear()
            self._relay_frontend(pending)

    def _flush_frontend(self, view: bytes | bytearray, pos: int) -> None:
        if pos == len(view):
            if pos:
                self.link.write(view if view is not self.inbuf else bytes(view))
            self.inbuf.clear()
        elif pos:
            self.link.write(bytes(view[:pos]))
            rest = bytes(view[pos:])
            self.inbuf.clear()
            self.inbuf += rest
        elif view is not self.inbuf:
            self.inbuf += view

    def _violation(self, view: bytes | bytearray, pos: int, message: str) -> None:
        """Forward the well-formed frames before ``pos``, then end this session alone."""
        if self.state is State.READY:
            self._flush_frontend(view[:pos], pos)
        log.warning("protocol violation peer=%s: %s", self.peer, message)
        self.fail(sqlstate.PROTOCOL_VIOLATION, message)

    def to_client(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def pause_client_reading(self) -> None:
        if self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def resume_client_reading(self) -> None:
        if self.transport is not None and self._paused:
            self._paused = False
            self.transport.resume_reading()

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def cancel_planned(self, reason: str) -> bool:
        """Stop the planner's work on the held statement; False when there is none to stop here
        (nothing planned, or Postgres is running SQL for it: cancel Postgres instead)."""
        task = self.planner_task
        if task is None or task.done() or self.in_backend_sql:
            return False
        self.cancel_reason = reason
        task.cancel()
        log.info("planned statement cancelled peer=%s reason=%s", self.peer, reason)
        return True

    # -- endings ------------------------------------------------------------------------------

    def on_backend_lost(self, exc: Exception | None) -> None:
        if self.state is State.CLOSED:
            return
        if self._terminating or self._refused:
            # Postgres ended the session on request, or already said why it refused it.
            self.state = State.CLOSED
            self.transport.close()
            return
        log.warning("backend connection lost peer=%s user=%s error=%s", self.peer, self.user, exc)
        self.fail(
            sqlstate.CONNECTION_FAILURE,
            "the backing Postgres closed the connection unexpectedly",
        )

    def shutdown(self) -> None:
        """Server shutdown: tell the client why, then close both ends."""
        self.fail(sqlstate.ADMIN_SHUTDOWN, "terminating connection due to administrator command")

    def _authentication_timeout(self) -> None:
        """authentication_timeout ran out before the first ReadyForQuery (Postgres's wording)."""
        self._deadline = None
        if self.state is State.TLS_HANDSHAKE:
            log.info("tls handshake timed out peer=%s", self.peer)
            self.state = State.CLOSED
            self._release()
            self.transport.abort()
            return
        log.info("authentication timed out peer=%s user=%s state=%s", self.peer, self.user, self.state.value)
        self.fail(sqlstate.QUERY_CANCELED, "canceling authentication due to timeout")

    def fail(self, code: str, message: str) -> None:
        """Send a FATAL error and close this session only."""
        if self.state is State.CLOSED:
            return
        self.server.metrics.error(code)
        self.state = State.CLOSED
        self._release()
        self._write(messages.fatal(code, message))
        if self.transport is not None:
            self.transport.close()
        if self.link is not None:
            self.link.write(messages.frame(b"X", b""))
            self.link.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
