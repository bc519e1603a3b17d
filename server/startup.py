"""Decoding of the untyped packets a client sends before the session starts."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from server import messages


class StartupError(Exception):
    """A startup packet that breaks the protocol; carries the SQLSTATE to report."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@dataclass
class SSLRequest:
    pass


@dataclass
class GSSENCRequest:
    pass


@dataclass
class CancelRequest:
    pid: int
    key: bytes


@dataclass
class StartupMessage:
    version: int
    params: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def major(self) -> int:
        return self.version >> 16

    @property
    def minor(self) -> int:
        return self.version & 0xFFFF


Packet = SSLRequest | GSSENCRequest | CancelRequest | StartupMessage


def split_packet(buf: bytearray) -> bytes | None:
    """Take one length-prefixed startup packet off ``buf``; None while incomplete."""
    if len(buf) < 4:
        return None
    (length,) = struct.unpack_from("!I", buf)
    if length < 8 or length > messages.STARTUP_MAX_LEN:
        raise StartupError("08P01", f"invalid length of startup packet: {length}")
    if len(buf) < length:
        return None
    packet = bytes(buf[:length])
    del buf[:length]
    return packet


def decode(packet: bytes) -> Packet:
    (code,) = struct.unpack_from("!I", packet, 4)
    if code == messages.SSL_REQUEST:
        return SSLRequest()
    if code == messages.GSSENC_REQUEST:
        return GSSENCRequest()
    if code == messages.CANCEL_REQUEST:
        if len(packet) < 16:
            raise StartupError("08P01", "invalid length of cancel request packet")
        (pid,) = struct.unpack_from("!I", packet, 8)
        return CancelRequest(pid=pid, key=packet[12:])
    return StartupMessage(version=code, params=_parse_params(packet[8:]), raw=packet)


def _parse_params(body: bytes) -> dict[str, str]:
    parts = body.split(b"\0")
    # A well-formed list is key\0value\0...\0 — so it ends with two empty parts.
    if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"":
        raise StartupError("08P01", "invalid startup packet layout: expected terminator as last byte")
    pairs = parts[:-2]
    if len(pairs) % 2:
        raise StartupError("08P01", "invalid startup packet layout: a parameter has no value")
    try:
        return {pairs[i].decode(): pairs[i + 1].decode() for i in range(0, len(pairs), 2)}
    except UnicodeDecodeError as exc:
        raise StartupError("08P01", "startup packet parameters are not valid UTF-8") from exc
