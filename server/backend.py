"""The client session's own connection to the backing Postgres.

During startup the link frames what Postgres says so the session can relay authentication and
swap in its own BackendKeyData. Once ready it passes bytes through untouched, only walking the
message headers to count ReadyForQuery (so the session knows when Postgres is idle and in which
transaction state). While the planner runs a statement of its own, replies are captured instead.
"""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING

from server import messages
from storage.target import BackendTarget

if TYPE_CHECKING:
    from server.session import ClientSession

_HEADER = struct.Struct("!BI")
_LEN = struct.Struct("!I")
_READY = ord("Z")
_ERROR = ord("E")
_IDLE = ord("I")


class BackendLink(asyncio.Protocol):
    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.raw = False
        self._buf = bytearray()
        self.ready_count = 0  # ReadyForQuery messages seen since passthrough began
        self.status = _IDLE  # transaction status byte of the last ReadyForQuery
        self._skip = 0  # bytes of the current message still to come in later chunks
        self._partial = b""  # a header split across chunks
        self._idle_waiter: tuple[int, asyncio.Future] | None = None
        self._capture: asyncio.Queue | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=512 * 1024)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.raw:
            self._buf += data
            self._drain_framed()
            return
        self._client_write(data)
        # Walk the message headers only (hot path: kept inline, in locals).
        if self._partial:
            data = self._partial + data
            self._partial = b""
        pos, size = self._skip, len(data)
        unpack = _LEN.unpack_from
        while pos < size:
            if size - pos < 6 and (size - pos < 5 or data[pos] == _READY):
                self._partial = data[pos:]
                pos = size
                break
            if data[pos] == _READY:
                self.ready_count += 1
                self.status = data[pos + 5]
                if self._idle_waiter is not None:
                    self._wake_idle_waiter()
            elif data[pos] == _ERROR:
                self._count_error(data, pos, size)
            pos += 1 + unpack(data, pos + 1)[0]
        self._skip = pos - size

    def _count_error(self, data: bytes, pos: int, size: int) -> None:
        """errors{sqlstate} counts Postgres's errors on the forwarded path too (a message cut
        before its code by the chunk boundary counts as XX000)."""
        metrics = getattr(self.session.server, "metrics", None)
        if metrics is None:
            return
        end = min(size, pos + 1 + _LEN.unpack_from(data, pos + 1)[0])
        try:
            metrics.error_message(bytes(data[pos:end]))
        except Exception:  # a truncated body: still an error
            metrics.error("XX000")

    @property
    def in_transaction(self) -> bool:
        """Postgres's last ReadyForQuery said: inside a transaction block (or a failed one)."""
        return self.status != _IDLE

    def _wake_idle_waiter(self) -> None:
        if self._idle_waiter is not None and self.ready_count >= self._idle_waiter[0]:
            future = self._idle_waiter[1]
            self._idle_waiter = None
            if not future.done():
                future.set_result(None)

    async def wait_ready(self, count: int) -> None:
        """Wait until Postgres has answered ``count`` Query/Sync messages in total."""
        if self.ready_count >= count:
            return
        future = asyncio.get_running_loop().create_future()
        self._idle_waiter = (count, future)
        await future

    def _drain_framed(self) -> None:
        buf = self._buf
        while not self.raw and len(buf) >= 5:
            kind, length = _HEADER.unpack_from(buf)
            end = 1 + length
            if len(buf) < end:
                return
            message = bytes(buf[:end])
            del buf[:end]
            if self._capture is not None:
                self._capture.put_nowait(message)
            else:
                self.session.on_startup_reply(kind, message)
        if self.raw and buf:
            rest = bytes(buf)
            buf.clear()
            self.data_received(rest)

    def start_passthrough(self) -> None:
        """Called once Postgres said ReadyForQuery: from now on bytes go straight to the client."""
        self._client_write = self.session.transport.write
        self.raw = True

    def start_capture(self) -> asyncio.Queue:
        """Deliver whole messages to the returned queue instead of the client (planner use)."""
        self._capture = asyncio.Queue()
        self.raw = False
        return self._capture

    def stop_capture(self) -> None:
        self._capture = None
        self.raw = True

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def release(self) -> None:
        """The session is closed: drop what is buffered (nobody will read it)."""
        self._buf = bytearray()
        self._partial = b""

    def pause_writing(self) -> None:
        self.session.pause_client_reading()

    def resume_writing(self) -> None:
        self.session.resume_client_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        if self._capture is not None:
            self._capture.put_nowait(None)  # wakes a planner waiting on this backend
        self.session.on_backend_lost(exc)


async def send_cancel(target: BackendTarget, pid: int, key: bytes) -> None:
    """Deliver a CancelRequest for backend ``pid`` to the backing Postgres."""
    if target.is_unix:
        reader, writer = await asyncio.open_unix_connection(target.socket_path)
    else:
        reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(messages.cancel_request(pid, key))
        await writer.drain()
        # Postgres closes the connection once it has handled the request.
        await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
