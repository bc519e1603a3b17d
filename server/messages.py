"""PostgreSQL v3 message codes and the few backend messages SieveDB writes itself.

Everything else crosses the server as raw frames; only what the server must say on its own
behalf (errors, its own BackendKeyData, SSL answers) is encoded here.
"""

from __future__ import annotations

import struct

# Startup-phase request codes (sent in place of a protocol version).
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

# Postgres's limits on what a client may send (libpq/libpq.h, libpq/auth.h, tcop/backend_startup.h).
STARTUP_MAX_LEN = 10_000  # MAX_STARTUP_PACKET_LENGTH
AUTH_MAX_LEN = 65_535  # PG_MAX_AUTH_TOKEN_LENGTH: the largest message before authentication completes
FRAME_MAX_LEN = 0x3FFF_FFFE  # PQ_LARGE_MESSAGE_LIMIT (MaxAllocSize - 1): Query, Parse, Bind, ...
SMALL_FRAME_MAX_LEN = 10_000  # PQ_SMALL_MESSAGE_LIMIT: the types in SMALL_TYPES
TLS_HANDSHAKE = 0x16  # first byte of a TLS record carrying a ClientHello (direct SSL)

# Frontend message types after startup.
FRONTEND_TYPES = frozenset(b"QPBEDCSHXdcfFp")
SMALL_TYPES = frozenset(b"CDEHSXcf")  # Close, Describe, Execute, Flush, Sync, Terminate, CopyDone/Fail
PASSWORD = ord("p")
QUERY = ord("Q")
PARSE = ord("P")
BIND = ord("B")
DESCRIBE = ord("D")
EXECUTE = ord("E")
CLOSE = ord("C")
SYNC = ord("S")
FLUSH = ord("H")
FUNCTION_CALL = ord("F")
TERMINATE = ord("X")

# Backend message types the startup relay looks at.
AUTHENTICATION = ord("R")
BACKEND_KEY_DATA = ord("K")
READY_FOR_QUERY = ord("Z")
ERROR_RESPONSE = ord("E")

_HEADER = struct.Struct("!cI")


def frame(kind: bytes, body: bytes) -> bytes:
    return _HEADER.pack(kind, len(body) + 4) + body


def error_response(
    sqlstate: str,
    message: str,
    *,
    severity: str = "ERROR",
    detail: str | None = None,
    hint: str | None = None,
) -> bytes:
    """An ErrorResponse with S, V, C and M at least (clients branch on C)."""
    fields = [b"S" + severity.encode(), b"V" + severity.encode(), b"C" + sqlstate.encode()]
    fields.append(b"M" + message.encode())
    if detail:
        fields.append(b"D" + detail.encode())
    if hint:
        fields.append(b"H" + hint.encode())
    body = b"\0".join(fields) + b"\0\0"
    return frame(b"E", body)


def fatal(sqlstate: str, message: str, hint: str | None = None) -> bytes:
    return error_response(sqlstate, message, severity="FATAL", hint=hint)


def ready_for_query(status: int) -> bytes:
    return frame(b"Z", bytes([status]))


def command_complete(tag: str) -> bytes:
    return frame(b"C", tag.encode() + b"\0")


def row_description(columns: list[str], formats: list[int] | tuple[int, ...] = ()) -> bytes:
    """Text columns of type text (oid 25); ``formats`` as a Bind gives them (none, one, or one
    per column)."""
    body = struct.pack("!h", len(columns))
    for i, name in enumerate(columns):
        code = formats[0] if len(formats) == 1 else (formats[i] if i < len(formats) else 0)
        body += name.encode() + b"\0" + struct.pack("!ihihih", 0, 0, 25, -1, -1, code)
    return frame(b"T", body)


def data_row(values: list[str | None]) -> bytes:
    body = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            body += struct.pack("!i", -1)
        else:
            raw = value.encode()
            body += struct.pack("!i", len(raw)) + raw
    return frame(b"D", body)


def parse(name: str, sql: str, param_oids: list[int] | tuple[int, ...] = ()) -> bytes:
    """A Parse message (frontend): prepare ``sql`` as statement ``name``."""
    body = name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!h", len(param_oids))
    return frame(b"P", body + b"".join(struct.pack("!i", oid) for oid in param_oids))


def bind(portal: str, statement: str, result_formats: list[int] | tuple[int, ...] = ()) -> bytes:
    """A Bind message (frontend) of a statement without parameters."""
    body = portal.encode() + b"\0" + statement.encode() + b"\0" + struct.pack("!hh", 0, 0)
    body += struct.pack(f"!h{len(result_formats)}h", len(result_formats), *result_formats)
    return frame(b"B", body)


SYNC_MESSAGE = frame(b"S", b"")


def notice(message: str) -> bytes:
    body = b"SNOTICE\0VNOTICE\0C00000\0M" + message.encode() + b"\0\0"
    return frame(b"N", body)


def backend_key_data(pid: int, key: bytes) -> bytes:
    return frame(b"K", struct.pack("!I", pid) + key)


def cancel_request(pid: int, key: bytes) -> bytes:
    body = struct.pack("!II", CANCEL_REQUEST, pid) + key
    return struct.pack("!I", len(body) + 4) + body


def parse_error_fields(body: bytes) -> dict[str, str]:
    """Fields of an ErrorResponse/NoticeResponse body, keyed by their one-letter code."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields
