"""One SieveDB server with the web face for the package: the digits (pixels, PNG, true label),
a logistic-regression proxy and oracle, two LANGUAGE labels functions, and two ordinary roles.
One headless Chromium for the package too."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.inference.models import Digits, digits_logreg, load_digits_data
from tests.support.model_files import DIGIT_PROXY_P7_DDL
from tests.support.servers import SieveProcess
from tests.web.support import chromium, missing_browser, web_url

ROLES = ("alice", "bob")  # ordinary roles: no superuser, no model admin


@dataclass
class WebWorld:
    server: SieveProcess
    base: str  # the web face, http://127.0.0.1:PORT
    digits: Digits

    def connect(self, user: str = "postgres", **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(user=user), autocommit=True, **kwargs)

    def truth(self, digit_id: int) -> int:
        return int(self.digits.y[digit_id])

    def labelling_link(self, function: str, user: str = "postgres") -> str:
        with self.connect(user) as conn:
            return conn.execute(f"select sieve.labelling_link('{function}')").fetchone()[0]

    def status_link(self, user: str = "postgres") -> str:
        with self.connect(user) as conn:
            return conn.execute("select sieve.status_link()").fetchone()[0]


def _load(world: WebWorld) -> None:
    with world.connect() as conn:
        conn.execute("create table digits (id int primary key, pixels real[], image bytea, label int)")
        with conn.cursor().copy("copy digits (id, pixels, image, label) from stdin") as copy:
            for i, (row, png) in enumerate(zip(world.digits.x, world.digits.png, strict=True)):
                copy.write_row((i, row.tolist(), png, world.truth(i)))
        conn.execute(DIGIT_PROXY_P7_DDL)
        conn.execute(
            "create function digit_guess(pixels real[]) returns int language onnx as 'digits_logreg.onnx', "
            '\'{"output": "label"}\''
        )
        conn.execute(
            "create function is_seven(image bytea) returns boolean language labels "
            "as 'Is this digit a seven?', '{\"choices\": [true, false]}'"
        )
        conn.execute(
            "create function which_digit(image bytea) returns int language labels "
            "as 'Which digit is this?', '{\"choices\": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}'"
        )
        for role in ROLES:
            conn.execute(f"create role {role} login")
            conn.execute(f"grant select on digits to {role}")
            conn.execute(f"grant execute on function digit_proxy_p7, digit_guess, is_seven to {role}")


@pytest.fixture(scope="package")
def web_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebWorld]:
    models_dir = tmp_path_factory.mktemp("web-models")
    digits = load_digits_data()
    digits_logreg(digits, models_dir)
    server = SieveProcess(
        data_dir=tmp_path_factory.mktemp("web-server") / "data",
        extra_args=["--models-dir", str(models_dir), "--http-port", "0", "--inference-workers", "1"],
    ).start()
    try:
        world = WebWorld(server, web_url(server.log()), digits)
        _load(world)
        yield world
    finally:
        server.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator:
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="sievedb-chromium-") as profile:
        driver = chromium(Path(profile))
        driver.set_page_load_timeout(30)
        try:
            yield driver
        finally:
            driver.quit()
