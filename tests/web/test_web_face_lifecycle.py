"""The web face starts with the server on --http-port, over TLS with the server's certificate,
and refuses to open beyond loopback in clear text."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import urllib.request

from tests.support.servers import REPO, SieveProcess
from tests.support.tls import self_signed
from tests.web.support import call, web_url


def test_a_non_loopback_web_face_without_tls_is_refused_and_says_why(tmp_path):
    cmd = [sys.executable, "-m", "server", "serve", "--port", "0", "--data-dir", str(tmp_path / "d")]
    done = subprocess.run(
        [*cmd, "--http-port", "0", "--http-host", "0.0.0.0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to serve the web face on 0.0.0.0 without TLS" in done.stderr
    assert "--tls-cert" in done.stderr and "--allow-trust-remote" in done.stderr
    assert not (tmp_path / "d").exists()  # refused before the embedded Postgres was created


def test_a_web_port_in_use_is_refused_and_says_why(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "server", "serve", "--port", "0", "--data-dir", str(tmp_path / "d")]
        done = subprocess.run(
            [*cmd, "--http-port", str(port), "--inference-workers", "1"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert done.returncode == 2
    assert f"cannot serve the web face on 127.0.0.1:{port}" in done.stderr
    assert "address already in use" in done.stderr.lower()


def test_the_web_face_serves_https_with_the_servers_certificate(tmp_path):
    cert, key = self_signed(tmp_path)
    server = SieveProcess(
        data_dir=tmp_path / "data",
        extra_args=[
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--http-port",
            "0",
            "--inference-workers",
            "1",
        ],
    ).start()
    try:
        base = web_url(server.log())
        assert base.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False  # the throwaway certificate names localhost
        with urllib.request.urlopen(base + "/metrics", context=context, timeout=30) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=")
        plain = base.replace("https://", "http://")
        try:
            call(plain, "GET", "/metrics")
            raise AssertionError("the web face answered clear text on its TLS port")
        except (ConnectionError, OSError):
            pass
    finally:
        assert server.stop() == 0
    assert "web face on https://" in server.log()
