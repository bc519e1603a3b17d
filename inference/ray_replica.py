"""One model replica as a Ray actor: an ONNX Runtime session run on batches from the object store.

This module runs inside Ray worker processes. ``RayInferencePool`` wraps ``ModelReplica`` with
``ray.remote`` and a resource request (one GPU where the cluster has GPUs, else one CPU).

A batch arrives as one uint8 array (the layout ``inference.ipc`` uses for shared memory) plus its
JSON-able headers: Ray hands numpy arrays over zero-copy from the node's object store, so the
actor reads its inputs in place, and text and bytes columns travel as one blob with offsets rather
than as pickled rows. The outputs go back the same way.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import ray

from inference import ipc
from inference.worker import BatchError, Worker


class ModelReplica:
    """Runs one model (``ModelRef.to_wire()`` form) on batches; one batch at a time."""

    def __init__(self, ident: str, model: dict[str, Any], device: str, gpu: bool) -> None:
        from inference.devices import choose_device, probe_model_bytes

        # Ray sets CUDA_VISIBLE_DEVICES to the GPU it granted, so that GPU is always index 0 here.
        choice = choose_device(device if gpu else "cpu", 0, probe_model_bytes() if gpu else None)
        threads = 4 if choice.device.startswith("cuda") else _granted_cpus()
        self._worker = Worker(0, choice.providers, choice.device, threads)
        self._ident, self._model = ident, model
        self._info = {
            "pid": os.getpid(),
            "device": choice.device,
            "reason": choice.reason,
            "node_ip": _node_ip(),
            "node_id": _node_id(),
        }

    def ready(self) -> dict[str, Any]:
        """Where this replica runs: pid, device, node ip and id (answered once it is placed)."""
        return self._info

    def run(self, payload: np.ndarray, headers: list[dict[str, Any]]) -> tuple[dict, list, np.ndarray | None]:
        """Outputs of one batch: ``(meta, headers, payload)``; on a failure the model itself
        reports (bad input, unloadable file), ``meta["error"]`` names it and nothing else is sent."""
        try:
            inputs = ipc.read_tensors(memoryview(payload), headers, copy=False)
            outputs, run_s, pre_s = self._worker.run_arrays(self._ident, self._model, inputs)
        except BatchError as exc:
            return {"error": exc.kind, "message": str(exc)}, [], None
        except Exception as exc:  # an unexpected ORT output: the batch fails, the replica lives on
            return {"error": "InferenceError", "message": f"model {self._model['key']!r}: {exc}"}, [], None
        plan, total = ipc.plan_layout({name: [ipc.encode_tensor(v)] for name, v in outputs.items()})
        out = np.empty(total, dtype=np.uint8)
        out_headers = ipc.write_layout(memoryview(out), plan)
        meta = {"run_s": run_s, "pre_s": pre_s, "device": self._info["device"]}
        return meta, out_headers, out


def _granted_cpus() -> int:
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


def _node_ip() -> str:
    return ray.util.get_node_ip_address()


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()
