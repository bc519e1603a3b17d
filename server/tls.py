"""TLS for clients: the server's context, and the handshake of a direct SSL connection.

PostgreSQL 17 clients may skip the SSLRequest (``sslnegotiation=direct``) and open with a TLS
ClientHello; Postgres then requires the ALPN protocol "postgresql", so that a TLS connection meant
for another service cannot be replayed at it. The session has already read the first bytes of the
ClientHello when it recognises one, and asyncio's ``start_tls`` cannot be handed bytes already read,
so ``wrap_server_side`` builds the TLS protocol itself and feeds them in.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from pathlib import Path

ALPN = "postgresql"


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols([ALPN])
    return context


async def wrap_server_side(
    transport: asyncio.Transport,
    protocol: asyncio.Protocol,
    context: ssl.SSLContext,
    already_read: bytes,
) -> asyncio.Transport:
    """Run the server side of a TLS handshake whose first ``already_read`` bytes the plain
    transport has delivered; returns the TLS transport that now feeds ``protocol``."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    tls = sslproto.SSLProtocol(loop, protocol, context, waiter, server_side=True, call_connection_made=False)
    transport.pause_reading()
    transport.set_protocol(tls)
    tls.connection_made(transport)
    view = memoryview(already_read)
    while view:
        buffer = tls.get_buffer(len(view))
        count = min(len(buffer), len(view))
        buffer[:count] = view[:count]
        tls.buffer_updated(count)
        view = view[count:]
    transport.resume_reading()
    await waiter
    return tls._get_app_transport()


def negotiated_alpn(transport: asyncio.BaseTransport) -> str | None:
    ssl_object = transport.get_extra_info("ssl_object")
    return ssl_object.selected_alpn_protocol() if ssl_object is not None else None
