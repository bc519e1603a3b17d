"""``make run`` (``sievedb serve --demo --http-port ...``) shows the labelling link of the demo's
labels function, the status page and /metrics; the links work and serve the digits."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.servers import SieveProcess
from tests.test_demo import wait_for_banner
from tests.web.support import call

pytestmark = pytest.mark.slow  # trains the demo's models and renders its video (~20 s)


@pytest.fixture(scope="module")
def demo_banner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SieveProcess, str]]:
    root = tmp_path_factory.mktemp("web-demo")
    server = SieveProcess(
        data_dir=root / "data",
        extra_args=[
            "--demo",
            "--models-dir",
            str(root / "models"),
            "--http-port",
            "0",
            "--inference-workers",
            "1",
        ],
    )
    offset = len(server.log())
    try:
        server.start()
        yield server, wait_for_banner(server, offset)
    finally:
        server.stop()


def link(banner: str, what: str) -> str:
    found = re.search(rf"^\s+{re.escape(what)}: (\S+)$", banner, re.MULTILINE)
    assert found, f"no {what!r} line in the banner:\n{banner}"
    return found.group(1)


def test_the_demo_banner_links_the_labelling_page_the_status_page_and_metrics(demo_banner):
    server, banner = demo_banner
    label = link(banner, "label the digits in a browser")
    status = link(banner, "status page")
    metrics = link(banner, "Prometheus metrics")
    assert label.startswith("http://127.0.0.1:") and "/label?token=" in label
    assert "/status?token=" in status and metrics.endswith("/metrics")
    assert "is_seven_by_eye(image) RECALL TARGET 90%" in banner
    for url in (label, status, metrics):
        assert call(url, "GET", "").status == 200

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("set sieve.seed = 7")
        with pytest.raises(psycopg.Error) as pending:
            conn.execute(
                "select id from digits where is_seven_by_eye(image) "
                "recall target 90% confidence 95% budget 40 using proxy digit_proxy_p7(pixels)"
            )
    assert pending.value.sqlstate == "SV001"
    base = label.split("/label?")[0]
    token = urllib.parse.parse_qs(urllib.parse.urlparse(label).query)["token"][0]
    shown = call(base, "GET", "/api/label/next", token).body
    assert shown["task"]["instructions"] == "Is this digit a seven?"
    assert shown["task"]["choices"] == [True, False] and shown["progress"]["pending"] > 0
    (image,) = shown["item"]["inputs"]
    assert image["kind"] == "image" and (image["width"], image["height"]) == (8, 8)
    png = call(base, "GET", image["url"], token)
    assert png.status == 200 and png.headers["Content-Type"] == "image/png"
