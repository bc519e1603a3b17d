"""One client connection: startup, authentication relay, then framed forwarding.

The session frames what the client sends (to enforce limits and show every statement to the
classifier) and writes whole runs of frames to its own backend session in one call; what Postgres
sends back is passed through unparsed once the session is ready.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import struct
from typing import TYPE_CHECKING

from planner.classify import Route
from server import messages, sqlstate, startup
from server.backend import BackendLink

if TYPE_CHECKING:
    from server.app import SieveServer

log = logging.getLogger("sievedb.server.session")

_LEN = struct.Struct("!I")


class State(enum.Enum):
    STARTUP = "startup"
    TLS_HANDSHAKE = "tls"
    CONNECTING = "connecting"
    AUTH = "auth"
    READY = "ready"
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
        self.tls = False
        self.cancel_key: tuple[int, bytes] | None = None
        self.backend_key: tuple[int, bytes] | None = None
        self._terminating = False
        self._refused = False
        self._paused = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        transport.set_write_buffer_limits(high=512 * 1024)  # type: ignore[attr-defined]
        self.server.sessions.add(self)

    def data_received(self, data: bytes) -> None:
        if self.state is State.READY or self.state is State.AUTH:
            self._relay_frontend(data)
        elif self.state is State.STARTUP:
            self.inbuf += data
            self._drive_startup()
        elif self.state is State.CONNECTING:
            self.inbuf += data  # relayed once the backend link is up

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = State.CLOSED
        self.server.forget(self)
        if self.link is not None:
            if not self._terminating:
                self.link.write(messages.frame(b"X", b""))
            self.link.close()

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

    async def _upgrade_tls(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.transport = await loop.start_tls(
                self.transport, self, self.server.ssl_context, server_side=True
            )
        except (OSError, ConnectionError, asyncio.CancelledError) as exc:
            log.info("tls handshake failed peer=%s error=%s", self.peer, exc)
            if self.transport is not None:
                self.transport.abort()
            return
        self.tls = True
        self.state = State.STARTUP

    def _begin(self, packet: startup.StartupMessage) -> None:
        if packet.major != 3:
            # Postgres rejects these too; say it ourselves so no backend is spent on it.
            self.fail(
                sqlstate.FEATURE_NOT_SUPPORTED,
                f"unsupported frontend protocol {packet.major}.{packet.minor}: server supports 3.0 to 3.2",
            )
            return
        self.user = packet.params.get("user", "")
        if not self.user:
            self.fail(sqlstate.INVALID_AUTHORIZATION, "no PostgreSQL user name specified in startup packet")
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
        if kind == messages.READY_FOR_QUERY:
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
        own = self.server.register_cancel_key(self, len(backend_secret))
        self.cancel_key = own
        self._write(messages.backend_key_data(own[0], own[1]))

    # -- forwarding ---------------------------------------------------------------------------

    def _relay_frontend(self, data: bytes) -> None:
        if self.inbuf:
            self.inbuf += data
            view: bytes | bytearray = self.inbuf
        else:
            view = data
        pos, size = 0, len(view)
        limit = self.server.max_message_bytes
        while size - pos >= 5:
            kind = view[pos]
            (length,) = _LEN.unpack_from(view, pos + 1)
            if kind not in messages.FRONTEND_TYPES:
                return self._violation(view, pos, f"invalid frontend message type {kind}")
            if length < 4 or length > limit:
                return self._violation(view, pos, f"invalid message length {length} for message type {kind}")
            end = pos + 1 + length
            if end > size:
                break
            if (kind == messages.QUERY or kind == messages.PARSE) and not self._forwardable(
                kind, view, pos + 5, end
            ):
                return self._violation(
                    view,
                    pos,
                    "statement needs the ML planner, which is not enabled",
                    sqlstate.FEATURE_NOT_SUPPORTED,
                )
            elif kind == messages.TERMINATE:
                self._terminating = True
            pos = end
        self._flush_frontend(view, pos)

    def _flush_frontend(self, view: bytes | bytearray, pos: int) -> None:
        if pos == len(view):
            self.link.write(view if view is not self.inbuf else bytes(view))
            self.inbuf.clear()
        elif pos:
            self.link.write(bytes(view[:pos]))
            rest = bytes(view[pos:])
            self.inbuf.clear()
            self.inbuf += rest
        elif view is not self.inbuf:
            self.inbuf += view

    def _forwardable(self, kind: int, view: bytes | bytearray, start: int, end: int) -> bool:
        if kind == messages.PARSE:
            start = view.index(0, start, end) + 1  # skip the statement name
        stop = view.index(0, start, end)
        sql = bytes(view[start:stop]).decode("utf-8", "replace")
        # Until the planner executes statements itself, anything routed elsewhere is refused
        # rather than forwarded to a Postgres that cannot answer it.
        return self.server.classifier.classify(sql).route is Route.FORWARD

    def _violation(
        self, view: bytes | bytearray, pos: int, message: str, code: str = sqlstate.PROTOCOL_VIOLATION
    ) -> None:
        """Forward the well-formed frames before ``pos``, then end this session alone."""
        self._flush_frontend(view[:pos], pos)
        log.warning("protocol violation peer=%s sqlstate=%s: %s", self.peer, code, message)
        self.fail(code, message)

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

    def fail(self, code: str, message: str) -> None:
        """Send a FATAL error and close this session only."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self._write(messages.fatal(code, message))
        if self.transport is not None:
            self.transport.close()
        if self.link is not None:
            self.link.write(messages.frame(b"X", b""))
            self.link.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
