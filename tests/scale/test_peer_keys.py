"""Cancel keys that name their front-end (server.peers), without a server."""

from __future__ import annotations

import pytest

from server.peers import MAX_ID, as_forwarded, as_issued, issue_key, key_owner, split_address, was_forwarded


@pytest.mark.parametrize("length", [4, 32, 256])  # protocol 3.0; 3.2 as Postgres 18 sends it; 3.2's most
def test_a_key_keeps_the_length_postgres_gave_and_names_its_frontend(length):
    for frontend in (1, 2, 77, MAX_ID):
        key = issue_key(frontend, length)
        assert len(key) == length
        assert key_owner(key) == frontend and not was_forwarded(key)
        forwarded = as_forwarded(key)
        assert len(forwarded) == length and key_owner(forwarded) == frontend and was_forwarded(forwarded)
        assert as_issued(forwarded) == key and as_issued(key) == key


def test_keys_are_random_beyond_their_first_byte():
    keys = {issue_key(5, 4)[1:] for _ in range(200)}
    assert len(keys) > 190  # 24 random bits: a repeat in 200 draws is rare (p ~ 0.1%)


def test_an_empty_key_names_no_frontend():
    assert key_owner(b"") == 0 and not was_forwarded(b"") and as_issued(b"") == b""


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:5433", ("127.0.0.1", 5433)),
        ("sievedb-a:5433", ("sievedb-a", 5433)),
        ("[::1]:6000", ("::1", 6000)),
    ],
)
def test_advertise_addresses_are_host_and_port(address, expected):
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", ":5433", "host:port", ""])
def test_a_bad_advertise_address_is_refused(address):
    with pytest.raises(ValueError, match="not host:port"):
        split_address(address)
