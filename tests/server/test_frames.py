"""server/frames.py reads message bodies as Postgres does; server/hba.py judges pg_hba rules."""

from __future__ import annotations

import struct

import pytest

from server import frames
from server.hba import Rule, passwordless_rule
from tests.support.rawpg import message


def _parse(name: bytes, sql: bytes, oids: list[int]) -> bytes:
    return message(b"P", name + b"\0" + sql + b"\0" + struct.pack(f"!H{len(oids)}i", len(oids), *oids))


def _bind(formats: list[int], values: list[bytes | None], results: list[int] = ()) -> bytes:
    body = b"portal\0stmt\0" + struct.pack(f"!H{len(formats)}H", len(formats), *formats)
    body += struct.pack("!H", len(values))
    for value in values:
        body += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    body += struct.pack(f"!H{len(results)}H", len(results), *results)
    return message(b"B", body)


@pytest.mark.parametrize(
    "frame",
    [
        message(b"Q", b"select 1\0"),
        _parse(b"s1", b"select $1", [23]),
        _bind([1], [b"\0\0\0\1", None], [0]),
        _bind([0, 1], [b"7", b"\0\0\0\1"]),
        message(b"C", b"Ss1\0"),
        message(b"D", b"P\0"),
        message(b"E", b"\0" + struct.pack("!i", 0)),
        message(b"S", b""),
        message(b"H", b""),
        message(b"d", b"anything at all"),
    ],
)
def test_well_formed_frames_read_cleanly(frame):
    assert frames.malformed(frame) is None


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        (message(b"Q", b"select 1"), "invalid string in message"),
        (message(b"Q", b"select 1\0x"), "invalid message format"),
        (_parse(b"s1", b"select $1", [23])[:-2], "insufficient data left in message"),
        (message(b"P", b"s1\0select 1\0"), "insufficient data left in message"),
        (_bind([0, 1, 0], [b"7", b"8"]), "bind message has 3 parameter formats but 2 parameters"),
        (_bind([0], [b"toolong"])[:-4], "insufficient data left in message"),
        (_bind([2], [b"7"]), "unsupported format code: 2"),
        (message(b"C", b""), "no data left in message"),
        (message(b"C", b"Xname\0"), "invalid CLOSE message subtype 88"),
        (message(b"D", b"Sname"), "invalid string in message"),
        (message(b"E", b"\0\0\0"), "insufficient data left in message"),
        (message(b"S", b"x"), "invalid message format"),
        (message(b"Q", b"select '\xb0'\0"), 'invalid byte sequence for encoding "UTF8": 0xb0'),
    ],
)
def test_malformed_frames_say_what_postgres_says(frame, complaint):
    found = frames.malformed(frame)
    assert found is not None and str(found) == complaint
    codes = {"format code": "22023", "byte sequence": "22021"}
    assert found.sqlstate == next((c for k, c in codes.items() if k in complaint), "08P01")


def test_offsets_read_one_frame_inside_a_buffer():
    buf = message(b"Q", b"select 1\0") + message(b"Q", b"select 2")
    assert frames.malformed(buf, 0, 14) is None
    assert str(frames.malformed(buf, 14, len(buf))) == "invalid string in message"


def _rule(kind, method, address=None, netmask=None, database=("all",), user=("all",), line=1):
    return Rule(line, kind, database, user, address, netmask, method)


def test_trust_on_the_relays_connection_type_opens_the_door():
    local_trust = _rule("local", "trust")
    tcp_scram = _rule("host", "scram-sha-256", "127.0.0.1", "255.255.255.255", line=2)
    assert passwordless_rule([local_trust, tcp_scram], unix_socket=True, relay_address=None) is local_trust
    assert passwordless_rule([local_trust, tcp_scram], unix_socket=False, relay_address="127.0.0.1") is None


def test_address_and_order_decide():
    trust_other_net = _rule("host", "trust", "10.0.0.0", "255.0.0.0")
    assert passwordless_rule([trust_other_net], False, "127.0.0.1") is None
    assert passwordless_rule([trust_other_net], False, "10.1.2.3") is trust_other_net
    catch_all = _rule("host", "scram-sha-256", "all")
    later_trust = _rule("host", "trust", "all", line=3)
    assert passwordless_rule([catch_all, later_trust], False, "10.1.2.3") is None
    one_db_first = _rule("host", "md5", "all", database=("app",))
    assert passwordless_rule([one_db_first, later_trust], False, "10.1.2.3") is later_trust
    replication = _rule("host", "trust", "all", database=("replication",))
    assert passwordless_rule([catch_all, replication], False, "10.1.2.3") is replication
    assert passwordless_rule([_rule("hostssl", "trust", "all")], False, "10.1.2.3") is None
    assert passwordless_rule([_rule("host", "trust", "db.example.com")], False, "10.1.2.3") is not None
    assert passwordless_rule([_rule("local", "peer")], True, None) is not None
