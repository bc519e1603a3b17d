"""Helpers of the web tests: the web face's address, a headless Chromium, JSON calls, screenshots."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageStat

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
)
WEB_FACE = re.compile(r"web face on (https?://\S+)")


def missing_browser() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is absent (Debian packages chromium and chromium-driver; make test-deps)"
    return None


def chromium(user_data_dir: Path):
    """A headless Chromium driven through the system's chromedriver (Selenium Manager stays off)."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def web_url(log: str) -> str:
    """The web face's address as the server logged it."""
    found = WEB_FACE.findall(log)
    if not found:
        raise AssertionError(f"the server logged no web face address:\n{log[-3000:]}")
    return found[-1]


@dataclass
class Reply:
    status: int
    body: dict | str
    headers: dict


def call(
    base: str, method: str, path: str, token: str | None = None, body=None, raw: bytes | None = None
) -> Reply:
    """One HTTP request; errors are replies too."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(base + path, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload, headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, payload, headers = error.code, error.read(), dict(error.headers)
    text = payload.decode("utf-8", "replace")
    if headers.get("Content-Type", "").startswith("application/json"):
        return Reply(status, json.loads(text), headers)
    return Reply(status, text, headers)


def wait_for(check: Callable[[], object], timeout: float = 20, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def png_spread(png: bytes) -> float:
    """The standard deviation of a screenshot's grey levels: 0 for a blank page."""
    with Image.open(io.BytesIO(png)) as image:
        return ImageStat.Stat(image.convert("L")).stddev[0]


def save_screenshot(png: bytes, name: str) -> Path:
    folder = Path(os.environ.get("SIEVEDB_SCREENSHOTS", tempfile.gettempdir())) / "sievedb-web-shots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(png)
    return path
