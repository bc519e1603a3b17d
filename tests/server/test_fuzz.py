"""Malformed frames, seeded: SieveDB answers them as Postgres does.

Each case is a short run of frontend messages (simple queries, extended batches, Close), plain
SQL and the model path (a model function call, an approximate clause), with one message mutated:
its body truncated, extended, bytes flipped or NULs inserted (the length kept right), or, now and
then, its header broken. The same bytes go to SieveDB and, directly, to the Postgres behind it
(same database, where the model function is its stub), each followed by a probe (Sync, then a
simple query); an approximate statement, which Postgres cannot parse, reaches it without its
clause (as SieveDB prepares it there) unless that is the frame mutated. Compared: whether the
session was closed, else whether an 08P01 error came and how many ReadyForQuery preceded the
probe's. (Where Postgres closes a session at a bad header without a word, SieveDB says why in a
FATAL 08P01 first: both count as closed.) Asserted besides: no hang (every read is bounded), the
server alive, and no backend left behind.
"""

from __future__ import annotations

import os
import random
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg
import pytest

from storage.embedded import EmbeddedPostgres, EmbeddedSettings
from tests.server.conftest import install_digits
from tests.support.rawpg import RawConnection, error_fields, message
from tests.support.servers import SieveProcess

SEED = int(os.environ.get("SIEVEDB_FUZZ_SEED", "20240917"))
CASES = int(os.environ.get("SIEVEDB_FUZZ_CASES", "15000"))  # about 30 s
# Sync, then close what a case may have left prepared (so both sessions start the next case
# alike), then a query whose answer ends the case.
PROBE = b"".join(
    [message(b"S", b"")]
    + [message(b"C", b"S" + name + b"\0") for name in (b"p1", b"m1", b"a1")]
    + [message(b"S", b""), message(b"Q", b"select 'probe-42'\0")]
)

MODEL_SQL = "select id, digit_oracle(pixels) from digits where id < 4"
APPROX_SQL = (
    "select id from digits where digit_oracle(pixels) = 7 and id < 40 "
    "recall target 50% confidence 80% budget 40 using proxy 0.5"
)
APPROX_BODY = APPROX_SQL[: APPROX_SQL.index(" recall")]
PLAIN_SQL = "select id, pixels[1] from digits where id < 3"
MODEL_BY_ID = "select digit_oracle(pixels) from digits where id = $1"


def _parse(name: str, sql: str, oids: tuple[int, ...] = ()) -> bytes:
    body = name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack(f"!H{len(oids)}i", len(oids), *oids)
    return message(b"P", body)


def _bind(statement: str, values: tuple[bytes, ...] = ()) -> bytes:
    body = b"\0" + statement.encode() + b"\0" + struct.pack("!HH", 1, 0) + struct.pack("!H", len(values))
    for value in values:
        body += struct.pack("!i", len(value)) + value
    return message(b"B", body + struct.pack("!HH", 1, 0))


def _batch(name: str, sql: str, values: tuple[bytes, ...] = (), oids: tuple[int, ...] = ()) -> list[bytes]:
    return [
        _parse(name, sql, oids),
        _bind(name, values),
        message(b"D", b"P\0"),
        message(b"E", b"\0" + struct.pack("!i", 0)),
        message(b"C", b"S" + name.encode() + b"\0"),
        message(b"S", b""),
    ]


# (name, frames for SieveDB, the same for Postgres: approximate statements without their clause)
BASES: list[tuple[str, list[bytes], list[bytes]]] = [
    ("plain query", [message(b"Q", PLAIN_SQL.encode() + b"\0")], []),
    ("model query", [message(b"Q", MODEL_SQL.encode() + b"\0")], []),
    ("approximate query", [message(b"Q", APPROX_SQL.encode() + b"\0")], []),
    ("plain batch", _batch("p1", "select id from digits where id = $1", (b"2",)), []),
    ("model batch", _batch("m1", MODEL_BY_ID, (b"3",), (23,)), []),
    ("approximate batch", _batch("a1", APPROX_SQL), _batch("a1", APPROX_BODY)),
    ("close", [message(b"C", b"Snever_prepared\0"), message(b"S", b"")], []),
]


def _case(rng: random.Random, frames: list[bytes], reference: list[bytes]) -> tuple[bytes, bytes, str]:
    """One mutated case: the bytes for SieveDB, for Postgres, and what was done."""
    reference = reference or frames
    i = rng.randrange(len(frames))
    frame, keep, how = _mutate(rng, frames[i], i)
    if frames[i] != reference[i]:  # the approximate statement itself: the same bytes to both
        reference = frames
    ours = frames[:i] + [frame] + frames[i + 1 : keep]
    theirs = reference[:i] + [frame] + reference[i + 1 : keep]
    return b"".join(ours), b"".join(theirs), f"{how} #{i}"


def _mutate(rng: random.Random, frame: bytes, i: int) -> tuple[bytes, int | None, str]:
    """Frame ``i`` mutated, where the case ends (None: with the rest of its frames), and how."""
    kind, body = frame[:1], bytearray(frame[5:])
    roll = rng.random()
    if roll < 0.04:  # a type Postgres does not know: FATAL for both
        return bytes([rng.choice(b"AGJKMNRTUVWYZ")]) + frame[1:], None, "type"
    if roll < 0.08:  # an impossible length: both close
        length = rng.choice([0, 3, 0x7FFF_FFFF, 0x4000_0000])
        return kind + struct.pack("!I", length) + bytes(body), i + 1, "length"
    how = rng.choice(["truncate", "append", "flip", "nul", "delete", "count"])
    if how == "truncate" and body:
        del body[rng.randrange(len(body)) :]
    elif how == "append":
        body += bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
    elif how == "flip" and body:
        body[rng.randrange(len(body))] = rng.randrange(256)
    elif how == "nul":
        body.insert(rng.randint(0, len(body)), 0)
    elif how == "delete" and body:
        del body[rng.randrange(len(body))]
    elif how == "count" and len(body) >= 2:  # a 16-bit count or format field gone wild
        at = rng.randrange(len(body) - 1)
        body[at : at + 2] = struct.pack("!H", rng.choice([1, 2, 3, 0x7FFF, 0xFFFF]))
    return message(kind, bytes(body)), None, how


@dataclass(frozen=True)
class Reply:
    protocol_error: bool  # an ErrorResponse with 08P01
    closed: bool
    ready: int  # ReadyForQuery before the probe's
    hung: bool = False
    internal: bool = field(default=False, compare=False)  # an XX000 (a planner bug, reported)

    def same_as(self, other: Reply) -> bool:
        if self.closed or other.closed:
            return self.closed == other.closed
        return self == other


def _exchange(raw: RawConnection, payload: bytes) -> Reply:
    """Send a case and the probe; read until the probe's answer or the end of the session."""
    error, ready, probed, internal = False, 0, False, False
    try:
        raw.send(payload + PROBE)
        while True:
            kind, body = raw.read_message()
            if kind == b"E":
                code = error_fields(body).get("C")
                error, internal = error or code == "08P01", internal or code == "XX000"
            elif kind == b"D" and b"probe-42" in body:
                probed = True
            elif kind == b"Z":
                if probed:
                    return Reply(error, False, ready - 2, internal=internal)  # the probe's Syncs: 2
                ready += 1
    except TimeoutError:
        return Reply(error, False, ready, hung=True)
    except OSError:
        return Reply(error, True, ready)


class Client:
    """A raw session that reconnects when a case ended it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.raw: RawConnection | None = None

    def run(self, payload: bytes) -> Reply:
        if self.raw is None:
            self.raw = RawConnection(self.host, self.port, timeout=15)
            self.raw.login()
        reply = _exchange(self.raw, payload)
        if reply.closed or reply.hung:
            self.raw.close()
            self.raw = None
        return reply

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()
            self.raw = None


@pytest.fixture(scope="module")
def fuzz_target(digits_models, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    server = SieveProcess(
        data_dir=data_dir, extra_args=["--models-dir", str(digits_models), "--inference-workers", "1"]
    ).start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        install_digits(conn)
        conn.execute(MODEL_SQL)  # the model's worker is up and its outputs cached
    socket_dir = str(EmbeddedPostgres(EmbeddedSettings(data_dir=data_dir)).socket_dir)
    yield server, socket_dir
    server.stop()


def _client_backends(socket_dir: str) -> int:
    with psycopg.connect(host=socket_dir, port=5432, user="postgres") as conn:
        sql = "select count(*) from pg_stat_activity where backend_type = 'client backend'"
        return conn.execute(sql + " and pid <> pg_backend_pid()").fetchone()[0]


def test_malformed_frames_get_postgres_answers(fuzz_target):
    server, socket_dir = fuzz_target
    backends_before = _client_backends(socket_dir)
    rng = random.Random(SEED)
    sieve, direct = Client(server.host, server.port), Client(socket_dir, 5432)
    mismatches, tally = [], Counter()
    started = time.monotonic()
    try:
        for case in range(CASES):
            name, frames, reference = rng.choice(BASES)
            payload, reference_payload, how = _case(rng, frames, reference)
            theirs, ours = direct.run(reference_payload), sieve.run(payload)
            if ours.closed != theirs.closed:  # start the next case from fresh sessions on both
                sieve.close()
                direct.close()
            assert not theirs.hung, f"case {case} ({name}, {how}) hangs Postgres itself: {payload!r}"
            assert not ours.hung, f"case {case} ({name}, {how}) hangs SieveDB: {payload!r}"
            tally[("closed" if ours.closed else "08P01" if ours.protocol_error else "other", name)] += 1
            tally[("XX000", name)] += ours.internal
            if not ours.same_as(theirs):
                mismatches.append((case, name, how, ours, theirs, payload))
    finally:
        sieve.close()
        direct.close()
    elapsed = time.monotonic() - started
    counts = {key: n for key, n in sorted(tally.items()) if n}
    print(f"\nfuzz seed={SEED} cases={CASES} in {elapsed:.1f}s: {counts}")
    assert not mismatches, "\n".join(
        f"case {c} ({n}, {h}): SieveDB {o} vs Postgres {t}: {p!r}" for c, n, h, o, t, p in mismatches[:10]
    )
    assert server.proc.poll() is None, "the server died"
    with psycopg.connect(server.dsn()) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    deadline = time.monotonic() + 10
    while _client_backends(socket_dir) > backends_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _client_backends(socket_dir) <= backends_before, "a backend outlived its session"
