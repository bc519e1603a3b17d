"""/status in a real browser as an ordinary role: its own running statements (with a cancel
button that works), its own sieve.query_log rows and a picture of its approximate run, nothing
of another role's; the cancel API refuses another role's statement."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator

import psycopg
import pytest
from selenium.webdriver.common.by import By

from tests.web.support import call, png_spread, save_screenshot, wait_for

APPROX = (
    "select id from digits where digit_guess(pixels) = 7 "
    "recall target 80% confidence 90% budget 100 using proxy digit_proxy_p7(pixels)"
)
SLEEP = "select pg_sleep(60)"


def token_of(link: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlparse(link).query)["token"][0]


class Sleeper(threading.Thread):
    """A role's statement that runs until cancelled; ``error`` is how it ended."""

    def __init__(self, world, user: str) -> None:
        super().__init__(daemon=True)
        self.conn = world.connect(user)
        self.error: psycopg.Error | None = None

    def run(self) -> None:
        try:
            self.conn.execute(SLEEP)
        except psycopg.Error as exc:
            self.error = exc


@pytest.fixture(scope="module")
def sleepers(web_world) -> Iterator[dict[str, Sleeper]]:
    with web_world.connect("alice") as conn:
        conn.execute("select digit_guess(pixels) from digits where id < 3").fetchall()
        conn.execute("set sieve.seed = 1")
        conn.execute(APPROX).fetchall()
    with web_world.connect("bob") as conn:
        conn.execute("select digit_guess(pixels) from digits where id between 3 and 5").fetchall()
    started = {user: Sleeper(web_world, user) for user in ("alice", "bob")}
    for sleeper in started.values():
        sleeper.start()
    yield started
    for sleeper in started.values():
        if sleeper.is_alive():
            sleeper.conn.cancel()
        sleeper.join(10)
        sleeper.conn.close()


def running_ids(base: str, token: str, text: str) -> list[int]:
    status = call(base, "GET", "/api/status", token).body
    return [s["id"] for s in status["running"] if s["text"] == text]


def test_an_ordinary_role_sees_only_its_own_statements_and_queries(web_world, browser, sleepers):
    alice = web_world.status_link("alice")
    base = web_world.base
    wait_for(lambda: running_ids(base, token_of(alice), SLEEP), what="alice's statement to be listed")
    with web_world.connect("alice") as conn:
        own = {r[0] for r in conn.execute("select query_id from sieve.query_log").fetchall()}
    browser.get(alice)
    wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, 'table[data-section="running"] button.cancel'),
        what="status",
    )

    roles = {
        td.text
        for td in browser.find_elements(
            By.CSS_SELECTOR, 'table[data-section="queries"] td[data-column="role"]'
        )
    }
    shown = {
        int(tr.get_attribute("data-id"))
        for tr in browser.find_elements(By.CSS_SELECTOR, 'table[data-section="queries"] tbody tr')
    }
    assert roles == {"alice"} and shown == own and len(own) >= 2
    running = browser.find_elements(By.CSS_SELECTOR, 'table[data-section="running"] td[data-column="role"]')
    assert {td.text for td in running} == {"alice"}
    picture = browser.find_element(By.CSS_SELECTOR, "figure.picture svg.trace")
    assert picture.is_displayed()
    assert int(picture.get_attribute("data-bins")) == 20 and int(picture.get_attribute("data-sampled")) > 0
    assert browser.find_elements(By.CSS_SELECTOR, "figure.picture line.threshold")

    for selector in ("#viewer", 'table[data-section="queries"]', 'table[data-section="models"]', "#auto"):
        assert browser.find_element(By.CSS_SELECTOR, selector).is_displayed(), selector
    png = browser.get_screenshot_as_png()
    save_screenshot(png, "status.png")
    assert png.startswith(b"\x89PNG") and png_spread(png) > 5

    browser.find_element(By.CSS_SELECTOR, 'table[data-section="running"] button.cancel').click()
    sleepers["alice"].join(20)
    assert not sleepers["alice"].is_alive()
    assert sleepers["alice"].error is not None and sleepers["alice"].error.sqlstate == "57014"
    assert sleepers["bob"].is_alive()


def test_the_cancel_api_refuses_another_roles_statement(web_world, sleepers):
    base = web_world.base
    alice, bob = token_of(web_world.status_link("alice")), token_of(web_world.status_link("bob"))
    (bobs,) = wait_for(lambda: running_ids(base, bob, SLEEP), what="bob's statement")
    assert running_ids(base, alice, SLEEP) == [] or bobs not in running_ids(base, alice, SLEEP)
    refused = call(base, "POST", "/api/status/cancel", alice, {"id": bobs})
    assert refused.status == 403 and refused.body["sqlstate"] == "42501"
    assert sleepers["bob"].is_alive()
    done = call(base, "POST", "/api/status/cancel", bob, {"id": bobs})
    assert done.status == 200 and done.body == {"cancelled": bobs}
    sleepers["bob"].join(20)
    assert sleepers["bob"].error is not None and sleepers["bob"].error.sqlstate == "57014"
    gone = call(base, "POST", "/api/status/cancel", bob, {"id": bobs})
    assert gone.status == 404
    bad = call(base, "POST", "/api/status/cancel", bob, {"id": str(bobs)})
    assert (
        bad.status == 400 and bad.body["sqlstate"] == "22P02" and "id must be an integer" in bad.body["error"]
    )
