"""Which inference pool a server gets: the local one unless a Ray address is given, and then a
clear error when Ray is not installed. Needs no Ray cluster."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from inference.errors import InferenceLayerError
from inference.model import ModelRef
from planner.lazy_pool import BackendUnavailable, LazyInferencePool
from tests.support.servers import REPO, free_port


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_without_an_address_models_run_on_the_local_pool_and_ray_is_never_imported(tmp_path):
    done = run_python(
        f"""
        import asyncio, sys
        from pathlib import Path
        import numpy as np
        import server.app, planner.planner  # everything a server imports
        from inference.model import ModelRef
        from planner.lazy_pool import LazyInferencePool
        from tests.inference import models

        async def main():
            _, mlp = models.digits_mlp(models.load_digits_data(), Path({str(tmp_path)!r}))
            lazy = LazyInferencePool(workers=1)
            out = await lazy.infer(ModelRef("mlp@1", str(mlp)), {{"X": np.zeros((3, 64), np.float32)}})
            print(type(lazy.pool).__name__, len(out["label"]), lazy.pool.replicas("mlp@1")["local"]["rows"])
            await lazy.close()

        if __name__ == "__main__":
            asyncio.run(main())
            print("ray imported:", "ray" in sys.modules)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["InferencePool 3 3", "ray imported: False"]


def test_a_ray_address_without_ray_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the package were absent
    with pytest.raises(BackendUnavailable, match=r"pip install 'sievedb\[ray\]'"):
        LazyInferencePool(ray_address="10.0.0.1:6379")


def test_the_server_refuses_to_start_with_a_ray_address_but_no_ray(tmp_path):
    done = run_python(
        f"""
        import sys
        sys.modules["ray"] = None  # as if the package were absent
        from server.cli import main
        sys.exit(main(["serve", "--port", "{free_port()}", "--data-dir", {str(tmp_path / "data")!r},
                       "--ray-address", "10.0.0.1:6379"]))
        """
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "pip install 'sievedb[ray]'" in done.stderr
    assert "SieveDB listening" not in done.stderr


def test_a_replica_bound_below_one_is_refused():
    with pytest.raises(BackendUnavailable, match="at least 1"):
        LazyInferencePool(ray_address="10.0.0.1:6379", ray_max_replicas=0)


def test_a_ray_address_where_nothing_listens_fails_the_model_call_at_once_naming_it():
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'sievedb[ray]'")
    address = f"127.0.0.1:{free_port()}"  # nothing listens: ray.init would wait for minutes

    async def call() -> None:
        lazy = LazyInferencePool(ray_address=address)
        for _ in range(2):  # the next call tries again
            with pytest.raises(
                InferenceLayerError, match=f"cannot join the Ray cluster at '{address}'.*refused"
            ):
                await asyncio.wait_for(lazy.infer(ModelRef("m@1", "m.onnx"), {"X": np.zeros((1, 2))}), 30)
        assert lazy.pool is None

    asyncio.run(call())
