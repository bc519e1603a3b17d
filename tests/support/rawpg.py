"""A deliberately minimal PostgreSQL v3 client over a plain socket, for sending what real
drivers never would (garbage frames, absurd lengths, raw startup requests)."""

from __future__ import annotations

import socket
import struct

PROTOCOL_3_0 = 196608


def startup_packet(user: str = "postgres", database: str = "postgres", version: int = PROTOCOL_3_0) -> bytes:
    body = struct.pack("!I", version)
    for key, value in (("user", user), ("database", database)):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def request_packet(code: int) -> bytes:
    return struct.pack("!II", 8, code)


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


class RawConnection:
    def __init__(self, host: str, port: int, timeout: float = 10) -> None:
        if host.startswith("/"):  # a unix-socket directory, as libpq takes it
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_byte(self) -> bytes:
        return self._take(1)

    def _take(self, count: int) -> bytes:
        while len(self.buf) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:count], self.buf[count:]
        return out

    def read_message(self) -> tuple[bytes, bytes]:
        kind = self._take(1)
        (length,) = struct.unpack("!I", self._take(4))
        return kind, self._take(length - 4)

    def read_until(self, kind: bytes) -> list[tuple[bytes, bytes]]:
        seen = []
        while True:
            msg = self.read_message()
            seen.append(msg)
            if msg[0] == kind:
                return seen

    def login(self, user: str = "postgres", version: int = PROTOCOL_3_0) -> list[tuple[bytes, bytes]]:
        """Trust-auth login; returns the messages up to the first ReadyForQuery."""
        self.send(startup_packet(user=user, version=version))
        return self.read_until(b"Z")

    def closed_by_peer(self) -> bool:
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def error_fields(body: bytes) -> dict[str, str]:
    return {chr(p[0]): p[1:].decode() for p in body.split(b"\0") if p}
