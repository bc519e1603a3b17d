"""Which device a worker runs on, and how many workers a machine wants.

CUDA is used only when ONNX Runtime lists the CUDA execution provider AND a probe session really
gets it: onnxruntime-gpu lists CUDA even on machines without a GPU or without the CUDA libraries,
and then silently falls back to CPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
from dataclasses import dataclass

log = logging.getLogger("sievedb.inference.devices")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def cpu_count() -> int:
    """CPUs this process may run on (respects affinity masks and container cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_count() -> int:
    """NVIDIA GPUs visible to this process that ONNX Runtime could use (0 when none)."""
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return 0
    try:
        found = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        found = min(found, len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"]))
    return found


def default_worker_count() -> int:
    """One worker per GPU; without GPUs, one per core but one (left to the event loop), at least 1."""
    gpus = gpu_count()
    return gpus if gpus else max(1, cpu_count() - 1)


def default_intra_op_threads(workers: int, device: str) -> int:
    """ORT threads per worker so that all workers together use the cores once."""
    share = max(1, cpu_count() // max(1, workers))
    # On a GPU, CPU threads only run the ops that fall back to CPU: a few are plenty.
    return min(4, share) if device == "cuda" else share


def probe_model_bytes() -> bytes:
    """A one-node ONNX model used to test whether CUDA really loads."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every ONNX Runtime we support
    return model.SerializeToString()


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cuda:0", "cpu"
    providers: list  # what InferenceSession gets
    reason: str  # why, for the log line


def choose_device(requested: str, gpu_index: int, probe: bytes | None) -> DeviceChoice:
    """Pick CUDA (device ``gpu_index``) when asked for or automatic and it really works, else CPU."""
    import onnxruntime as ort

    cpu = DeviceChoice("cpu", [CPU], "CPU requested")
    if requested == "cpu":
        return cpu
    if CUDA not in ort.get_available_providers():
        return DeviceChoice("cpu", [CPU], "CUDA execution provider not in this onnxruntime build")
    if probe is None:
        return DeviceChoice("cpu", [CPU], "no GPU found")
    _preload_cuda_libraries()
    providers = [(CUDA, {"device_id": gpu_index}), CPU]
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # a failed CUDA load is expected here; we report it ourselves
    try:
        session = ort.InferenceSession(probe, opts, providers=providers)
    except Exception as exc:
        return DeviceChoice("cpu", [CPU], f"CUDA failed to load: {exc}")
    if session.get_providers()[0] != CUDA:
        return DeviceChoice("cpu", [CPU], "CUDA execution provider failed to load (libraries missing?)")
    return DeviceChoice(f"cuda:{gpu_index}", providers, "CUDA execution provider loaded")


def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from NVIDIA's pip wheels (if installed) before ORT looks for them."""
    import onnxruntime as ort

    if not hasattr(ort, "preload_dlls") or importlib.util.find_spec("nvidia") is None:
        return
    captured = io.StringIO()
    try:
        # preload_dlls reports missing libraries with print(); keep that out of the server's stdout.
        with contextlib.redirect_stdout(captured):
            ort.preload_dlls()
    except Exception as exc:
        log.debug("onnxruntime.preload_dlls failed: %s", exc)
    if captured.getvalue().strip():
        log.debug("onnxruntime.preload_dlls: %s", captured.getvalue().strip())
