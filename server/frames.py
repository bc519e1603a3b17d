"""Reading a frontend message's body the way Postgres reads it (sans I/O).

The server parses only the frames of statements it may plan itself. A frame it cannot read is
not a statement for the planner: the session forwards it to Postgres, which answers it exactly
as it answers any malformed message (ERROR 08P01, the session kept, and in the extended
protocol the rest of the batch skipped up to Sync). ``malformed`` says whether that is the case,
with Postgres's own wording (src/backend/libpq/pqformat.c and tcop/postgres.c).
"""

from __future__ import annotations

import struct

from server import messages

_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")


class Malformed(Exception):
    """The message Postgres would raise reading this body (SQLSTATE 08P01 unless noted)."""

    def __init__(self, message: str, sqlstate: str = "08P01") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class _Body:
    """A cursor over one message body, raising what pq_getmsg* raise."""

    def __init__(self, frame: bytes | bytearray, start: int, stop: int) -> None:
        self.frame = frame
        self.pos = start + 5  # past the type byte and the length
        self.stop = stop

    def byte(self) -> int:
        if self.pos >= self.stop:
            raise Malformed("no data left in message")
        self.pos += 1
        return self.frame[self.pos - 1]

    def string(self) -> None:
        """A NUL-terminated string, valid UTF-8 (SieveDB's client encoding; Postgres checks it
        as it reads the string, with SQLSTATE 22021)."""
        end = self.frame.find(0, self.pos, self.stop)
        if end < 0:
            raise Malformed("invalid string in message")
        try:
            bytes(self.frame[self.pos : end]).decode()
        except UnicodeDecodeError as exc:
            bad = bytes(self.frame[self.pos + exc.start : self.pos + exc.end])
            raise Malformed(
                f'invalid byte sequence for encoding "UTF8": {" ".join(f"0x{b:02x}" for b in bad)}', "22021"
            ) from exc
        self.pos = end + 1

    def skip(self, count: int) -> None:
        if count < 0 or count > self.stop - self.pos:
            raise Malformed("insufficient data left in message")
        self.pos += count

    def take(self, count: int) -> bytes:
        self.skip(count)
        return bytes(self.frame[self.pos - count : self.pos])

    def uint16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def int32(self) -> int:
        return _I32.unpack(self.take(4))[0]

    def end(self) -> None:
        if self.pos != self.stop:
            raise Malformed("invalid message format")


def _query(body: _Body) -> None:
    body.string()
    body.end()


def _parse(body: _Body) -> None:
    body.string()
    body.string()
    for _ in range(body.uint16()):
        body.int32()
    body.end()


def _format_codes(body: _Body) -> list[int]:
    codes = [body.uint16() for _ in range(body.uint16())]
    for code in codes:
        if code not in (0, 1):
            # Postgres says so when it reaches the value; SieveDB never decodes such a frame.
            raise Malformed(f"unsupported format code: {code}", "22023")
    return codes


def _bind(body: _Body) -> None:
    body.string()
    body.string()
    formats = _format_codes(body)
    count = body.uint16()
    if len(formats) > 1 and len(formats) != count:
        raise Malformed(f"bind message has {len(formats)} parameter formats but {count} parameters")
    for _ in range(count):
        length = body.int32()
        if length != -1:
            body.skip(length)
    _format_codes(body)
    body.end()


def _close_or_describe(name: str):
    def read(body: _Body) -> None:
        kind = body.byte()
        body.string()
        body.end()
        if kind not in (ord("S"), ord("P")):
            raise Malformed(f"invalid {name} message subtype {kind}")

    return read


def _execute(body: _Body) -> None:
    body.string()
    body.int32()
    body.end()


def _empty(body: _Body) -> None:
    body.end()


_READERS = {
    messages.QUERY: _query,
    messages.PARSE: _parse,
    messages.BIND: _bind,
    messages.CLOSE: _close_or_describe("CLOSE"),
    messages.DESCRIBE: _close_or_describe("DESCRIBE"),
    messages.EXECUTE: _execute,
    messages.SYNC: _empty,
    messages.FLUSH: _empty,
}


def malformed(buf: bytes | bytearray, start: int = 0, stop: int | None = None) -> Malformed | None:
    """What Postgres would complain about reading the body of the whole frame ``buf[start:stop]``
    (its header already checked); None when it reads cleanly or is of a type the server never
    reads itself."""
    reader = _READERS.get(buf[start])
    if reader is None:
        return None
    try:
        reader(_Body(buf, start, len(buf) if stop is None else stop))
    except Malformed as exc:
        return exc
    return None
