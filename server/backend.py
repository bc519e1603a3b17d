"""The client session's own connection to the backing Postgres.

During startup the link frames what Postgres says so the session can relay authentication and
swap in its own BackendKeyData; once the session is ready it passes bytes through untouched.
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


class BackendLink(asyncio.Protocol):
    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.raw = False
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=512 * 1024)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.raw:
            self.session.to_client(data)
            return
        self._buf += data
        self._drain_framed()

    def _drain_framed(self) -> None:
        buf = self._buf
        while not self.raw and len(buf) >= 5:
            kind, length = _HEADER.unpack_from(buf)
            end = 1 + length
            if len(buf) < end:
                return
            message = bytes(buf[:end])
            del buf[:end]
            self.session.on_startup_reply(kind, message)
        if self.raw and buf:
            rest = bytes(buf)
            buf.clear()
            self.session.to_client(rest)

    def start_passthrough(self) -> None:
        """Called by the session once Postgres said ReadyForQuery for the first time."""
        self.raw = True

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def pause_writing(self) -> None:
        self.session.pause_client_reading()

    def resume_writing(self) -> None:
        self.session.resume_client_reading()

    def connection_lost(self, exc: Exception | None) -> None:
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
