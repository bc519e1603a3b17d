"""Running a Ray scenario in a network namespace with only loopback, and reading its answer.

Ray advertises the machine's network address even when told 127.0.0.1; in a namespace whose only
interface is ``lo`` it has no other, so every byte of a test stays on this machine. A scenario is
a module of this package run as ``python -m tests.ray.<name>`` that prints one JSON object as its
last line of stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.servers import REPO


def skip_unless_isolatable() -> None:
    """Skip (with the reason) where a loopback-only namespace cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("the Ray tests run in a network namespace (unshare -n), which needs root")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("the Ray tests need unshare and ip (make test-deps installs them)")
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'sievedb[ray]'")


def run_scenario(name: str, *args: str, timeout: float = 180) -> dict:
    """Run ``tests.ray.<name>`` inside ``unshare -n`` and return the JSON it printed last."""
    skip_unless_isolatable()
    inner = " ".join([sys.executable, "-m", f"tests.ray.{name}", *args])
    cmd = ["unshare", "-n", "--", "sh", "-c", f"ip link set lo up && exec {inner}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.splitlines()[-60:])
        raise AssertionError(f"scenario {name} exited {done.returncode}:\n{done.stdout[-4000:]}\n{tail}")
    return json.loads(lines[-1])
