"""Bad input on the labelling API and page: unknown and expired tokens, a token used beyond its
function or scope, a label of the wrong type, a double submission, a row deleted after it was
queued. Each gets its status, SQLSTATE and message; the queue and the server go on."""

from __future__ import annotations

import io
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import psycopg
import pytest
from PIL import Image

from tests.web.support import call

ROWS = 4


def png(seed: int) -> bytes:
    """An image no other test queues (requests are keyed by the input's digest)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 12), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def token_of(link: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlparse(link).query)["token"][0]


@dataclass
class Queue:
    token: str  # postgres's label token for is_odd
    requests: dict[int, int]  # spots row id -> request id


def pending(conn, function: str) -> dict[int, int]:
    rows = conn.execute(
        "select key, request_id from sieve.label_requests where function = %s", (function,)
    ).fetchall()
    return {int(key): request_id for key, request_id in rows}


@pytest.fixture(scope="module")
def queue(web_world) -> Iterator[Queue]:
    with web_world.connect() as conn:
        conn.execute("create table spots (id int primary key, image bytea)")
        for i in range(ROWS):
            conn.execute("insert into spots values (%s, %s)", (i, png(1000 + i)))
        conn.execute(
            "create function is_odd(image bytea) returns boolean language labels "
            "as 'Is this picture odd?', '{\"choices\": [true, false]}'"
        )
        conn.execute("grant select on spots to alice, bob")
        conn.execute("grant execute on function is_odd to alice, bob")
        for function in ("is_odd", "which_digit"):
            with pytest.raises(psycopg.Error) as failed:
                conn.execute(f"select id from spots where {function}(image) is not null")
            assert failed.value.sqlstate == "SV001"
        requests = pending(conn, "is_odd")
    assert sorted(requests) == list(range(ROWS))
    yield Queue(token_of(web_world.labelling_link("is_odd")), requests)


def test_an_unknown_token_is_401_on_the_api_and_a_readable_page(web_world, queue):
    for token in ("garbage", queue.token[:-4] + "AAAA"):
        reply = call(web_world.base, "GET", "/api/label/next", token)
        assert reply.status == 401 and reply.body["sqlstate"] == "28000"
        assert "unknown or expired token" in reply.body["error"]
    page = call(web_world.base, "GET", "/label?token=garbage")
    assert page.status == 401 and page.headers["Content-Type"].startswith("text/html")
    assert "Link not valid" in page.body and "unknown or expired token" in page.body
    bare = call(web_world.base, "GET", "/api/label/next")
    assert bare.status == 401 and "Authorization: Bearer" in bare.body["error"]


def test_an_expired_token_is_401(web_world, queue):
    token = token_of(web_world.labelling_link("is_odd"))
    assert call(web_world.base, "GET", "/api/label/next", token).status == 200
    with web_world.connect() as conn:
        conn.execute(
            "update sieve.label_tokens set expires_at = now() - interval '1 second' "
            "where token_sha256 = sha256(convert_to(%s, 'UTF8'))",
            (token,),
        )
    reply = call(web_world.base, "GET", "/api/label/next", token)
    assert reply.status == 401 and reply.body["sqlstate"] == "28000"
    assert call(web_world.base, "GET", f"/label?token={token}").status == 401
    assert call(web_world.base, "GET", "/api/label/next", queue.token).status == 200  # others go on


def test_a_token_labels_only_its_own_function_and_a_status_token_labels_nothing(web_world, queue):
    with web_world.connect() as conn:
        other = next(iter(pending(conn, "which_digit").values()))
    reply = call(web_world.base, "POST", "/api/label", queue.token, {"request_id": other, "value": 3})
    assert reply.status == 403 and reply.body["sqlstate"] == "42501"
    assert "is not one of function is_odd" in reply.body["error"]
    status_token = token_of(web_world.status_link())
    for method, path, body in (
        ("GET", "/api/label/next", None),
        ("POST", "/api/label", {"request_id": 1, "value": 1}),
    ):
        reply = call(web_world.base, method, path, status_token, body)
        assert reply.status == 403 and reply.body["sqlstate"] == "42501"
    with web_world.connect() as conn:
        assert len(pending(conn, "which_digit")) == ROWS  # nothing was labelled


def test_a_label_of_the_wrong_type_or_shape_is_400_and_writes_nothing(web_world, queue):
    request_id = queue.requests[0]
    for value, sqlstate in (("maybe", "22P02"), (7, "22P02")):
        reply = call(
            web_world.base, "POST", "/api/label", queue.token, {"request_id": request_id, "value": value}
        )
        assert reply.status == 400 and reply.body["sqlstate"] == sqlstate, reply.body
        assert "is not a boolean" in reply.body["error"]
    for body, needle in (
        ({"request_id": "one", "value": True}, 'request_id must be an integer, not "one"'),
        ({"value": True}, "lacks request_id"),
    ):
        reply = call(web_world.base, "POST", "/api/label", queue.token, body)
        assert reply.status == 400 and needle in reply.body["error"]
    reply = call(web_world.base, "POST", "/api/label", queue.token, raw=b"{not json")
    assert reply.status == 400 and reply.body["sqlstate"] == "22P02"
    with web_world.connect() as conn:
        assert pending(conn, "is_odd")[0] == request_id  # still pending


def test_a_second_answer_to_the_same_request_keeps_the_first(web_world, queue):
    alice = token_of(web_world.labelling_link("is_odd", user="alice"))
    bob = token_of(web_world.labelling_link("is_odd", user="bob"))
    request_id = queue.requests[1]
    first = call(web_world.base, "POST", "/api/label", alice, {"request_id": request_id, "value": True})
    assert first.status == 200 and first.body["given"]["changed"] is True
    again = call(web_world.base, "POST", "/api/label", alice, {"request_id": request_id, "value": True})
    assert again.status == 200 and again.body["given"]["changed"] is False
    clash = call(web_world.base, "POST", "/api/label", bob, {"request_id": request_id, "value": False})
    assert clash.status == 409 and clash.body["sqlstate"] == "55000"
    assert "already labelled true by alice" in clash.body["error"]
    with web_world.connect() as conn:
        assert conn.execute("select is_odd(image) from spots where id = 1").fetchone()[0] is True


def test_a_request_whose_row_was_deleted_is_410_and_the_queue_goes_on(web_world, queue):
    request_id = queue.requests[2]
    with web_world.connect() as conn:
        conn.execute("delete from spots where id = 2")
    reply = call(
        web_world.base, "POST", "/api/label", queue.token, {"request_id": request_id, "value": False}
    )
    assert reply.status == 410 and reply.body["sqlstate"] == "P0002"
    assert "no longer exists" in reply.body["error"]
    shown = []
    while (item := call(web_world.base, "GET", "/api/label/next", queue.token).body["item"]) is not None:
        shown.append(int(item["key"]))
        done = call(
            web_world.base,
            "POST",
            "/api/label",
            queue.token,
            {"request_id": item["request_id"], "value": False},
        )
        assert done.status == 200
    assert shown == [0, 3]  # the deleted row's request is skipped, the labelled one is done
    with web_world.connect() as conn:
        values = dict(conn.execute("select id, is_odd(image) from spots order by id").fetchall())
    assert values == {0: False, 1: True, 3: False}
