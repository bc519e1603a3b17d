"""The worker process: runs batches on ONNX Runtime sessions it loads lazily.

Protocol (all messages are ``Connection.send_bytes`` frames; headers are JSON, see ``ipc``):

pool -> worker (request pipe)
    {"type": "run", "seq", "slot", "in", "out", "model": ModelRef.to_wire(), "inputs": [headers]}
    {"type": "stop"}
worker -> pool (response pipe)
    {"type": "ready", "pid", "device", "providers", "reason", "threads"}
    {"type": "result", "seq", "outputs": [headers], "inline": bool, "run_s", "pre_s"}
        followed, when ``inline``, by one frame holding the output bytes
    {"type": "error", "seq", "error": "InferenceError" | "ModelLoadError" | ..., "message"}

Inputs are read in place from the slot's input segment; outputs are written to the slot's output
segment, or sent inline when they do not fit (the pool then grows the segment for next time).
The worker never creates or unlinks shared memory, so killing it leaks nothing.
"""

from __future__ import annotations

import os
import signal
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from inference import ipc
from inference.loading import open_session
from inference.preprocess import apply_post_ops, preprocess_input, zipmap_to_array

_MAX_SESSIONS = 16

# ORT type strings -> numpy dtypes for casting inputs that are close enough (float64 -> float32).
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


class BatchError(Exception):
    """A failure to report to the batch's callers; ``kind`` names the pool-side exception."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Session:
    def __init__(self, session: Any, model: dict[str, Any]) -> None:
        self.session = session
        self.inputs = {i.name: _ORT_DTYPES.get(i.type) for i in session.get_inputs()}
        first = session.get_inputs()[0].shape
        # Models exported with a fixed batch of k rows are run k rows at a time.
        self.fixed_batch = first[0] if first and isinstance(first[0], int) and first[0] > 0 else None
        self.output_names = model["outputs"] or [o.name for o in session.get_outputs()]
        self.output_meta = {o.name: o for o in session.get_outputs()}

    def empty_outputs(self) -> list[np.ndarray]:
        """What a run on zero rows returns, built from the declared output types."""
        result = []
        for name in self.output_names:
            meta = self.output_meta[name]
            if not meta.type.startswith("tensor("):
                result.append(np.empty((0, 0), dtype=np.float32))  # a ZipMap, as zipmap_to_array
                continue
            dtype = object if meta.type == "tensor(string)" else _ORT_DTYPES.get(meta.type, np.float32)
            dims = [d if isinstance(d, int) else 0 for d in (meta.shape or [0])[1:]]
            result.append(np.empty((0, *dims), dtype=dtype))
        return result


class Worker:
    def __init__(self, worker_id: int, providers: list, device: str, threads: int) -> None:
        self.worker_id = worker_id
        self.providers = providers
        self.device = device
        self.threads = threads
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self.models: dict[str, dict[str, Any]] = {}  # ident -> ModelRef.to_wire(), sent once
        self.segments: dict[str, ipc.Segment] = {}  # attached segments by name
        self.slot_names: dict[int, tuple[str, str]] = {}

    # -- sessions -------------------------------------------------------------------------------

    def session(self, ident: str, model: dict[str, Any]) -> _Session:
        entry = self.sessions.get(ident)
        if entry is None:
            entry = _Session(self._load(model), model)
            self.sessions[ident] = entry
            if len(self.sessions) > _MAX_SESSIONS:
                self.sessions.popitem(last=False)
        self.sessions.move_to_end(ident)
        return entry

    def _load(self, model: dict[str, Any]) -> Any:
        import onnxruntime as ort

        path = model["path"]
        if not os.path.isfile(path):
            raise BatchError("ModelNotFoundError", f"model {model['key']!r}: file not found: {path}")
        opts = model["session_options"]
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = int(opts.get("intra_op_num_threads", self.threads))
        so.inter_op_num_threads = int(opts.get("inter_op_num_threads", 1))
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = opts.get("graph_optimization_level", "all")
        so.graph_optimization_level = _OPT_LEVELS[level](ort)
        for flag in ("enable_mem_pattern", "enable_cpu_mem_arena"):
            if flag in opts:
                setattr(so, flag, bool(opts[flag]))
        # Between batches a worker waits on its pipe: spinning ORT threads would only burn the cores
        # that the event loop and the other workers need (measured: 2.5x the CPU per batch).
        config = {"session.intra_op.allow_spinning": "0", **(opts.get("config") or {})}
        for k, v in config.items():
            so.add_session_config_entry(str(k), str(v))
        providers = ["CPUExecutionProvider"] if opts.get("device") == "cpu" else self.providers
        try:
            return open_session(path, so, providers)
        except Exception as exc:
            raise BatchError("ModelLoadError", f"model {model['key']!r}: cannot load {path}: {exc}") from exc

    # -- segments -------------------------------------------------------------------------------

    def buffers(self, slot: int, in_name: str, out_name: str) -> tuple[memoryview, ipc.Segment]:
        old = self.slot_names.get(slot)
        if old != (in_name, out_name):
            self.slot_names[slot] = (in_name, out_name)
            live = {n for pair in self.slot_names.values() for n in pair}
            for name in [n for n in self.segments if n not in live]:
                self.segments.pop(name).close()  # replaced by a bigger one
            for name in (in_name, out_name):
                if name not in self.segments:
                    self.segments[name] = ipc.Segment(name)
        return self.segments[in_name].buf, self.segments[out_name]

    # -- running --------------------------------------------------------------------------------

    def run(self, msg: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
        if "model" in msg:
            self.models[msg["ident"]] = msg["model"]
        model = self.models[msg["ident"]]
        in_buf, out_seg = self.buffers(msg["slot"], msg["in"], msg["out"])
        inputs = ipc.read_tensors(in_buf, msg["inputs"], copy=False)
        outputs, run_s, pre_s = self.run_arrays(msg["ident"], model, inputs)
        del inputs  # drop views of the input segment before it can be replaced
        headers, payload = self._write(outputs, out_seg)
        reply = {"type": "result", "seq": msg["seq"], "outputs": headers, "inline": payload is not None}
        reply.update(run_s=run_s, pre_s=pre_s, device=self.device)
        return reply, payload

    def run_arrays(
        self, ident: str, model: dict[str, Any], inputs: dict[str, Any]
    ) -> tuple[dict[str, Any], float, float]:
        """One batch on arrays in memory (the worker's shared memory, or a Ray replica's object
        store): its outputs post-processed, seconds in the session, seconds preprocessing."""
        entry = self.session(ident, model)
        t0 = time.perf_counter()
        feeds = self._feeds(inputs, model, entry)
        t1 = time.perf_counter()
        outputs = self._run(entry, feeds, model["key"])
        t2 = time.perf_counter()
        del feeds
        return self._post(outputs, model, entry.output_names), t2 - t1, t1 - t0

    def _feeds(self, inputs: dict[str, Any], model: dict[str, Any], entry: _Session) -> dict[str, Any]:
        feeds = {}
        for name, value in inputs.items():
            options = model["preprocess"].get(name)
            if options is not None:
                try:
                    value = preprocess_input(value, options)
                except ValueError as exc:
                    raise BatchError(
                        "InferenceError", f"model {model['key']!r}: input {name!r}: {exc}"
                    ) from exc
            want = entry.inputs.get(name)
            # Cast close types (float64 -> float32); anything else is left for ORT to reject.
            if (
                want is not None
                and isinstance(value, np.ndarray)
                and value.dtype != want
                and np.can_cast(value.dtype, want, "same_kind")
            ):
                value = value.astype(want)
            feeds[name] = value
        return feeds

    def _run(self, entry: _Session, feeds: dict[str, Any], key: str) -> list[Any]:
        if feeds and all(len(v) == 0 for v in feeds.values()):
            return entry.empty_outputs()  # many ONNX-ML ops reject empty batches
        try:
            if entry.fixed_batch is None:
                return entry.session.run(entry.output_names, feeds)
            return self._run_chunked(entry, feeds)
        except BatchError:
            raise
        except Exception as exc:
            raise BatchError("InferenceError", f"model {key!r}: {exc}") from exc

    def _run_chunked(self, entry: _Session, feeds: dict[str, Any]) -> list[Any]:
        k = entry.fixed_batch
        rows = len(next(iter(feeds.values())))
        if rows % k:
            raise BatchError("InferenceError", f"model takes batches of {k} rows; got {rows}")
        parts = [
            entry.session.run(entry.output_names, {n: v[i : i + k] for n, v in feeds.items()})
            for i in range(0, rows, k)
        ]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(entry.output_names))]

    def _post(self, outputs: list[Any], model: dict[str, Any], names: list[str]) -> dict[str, Any]:
        result = {}
        for name, value in zip(names, outputs, strict=True):
            if isinstance(value, list):
                # skl2onnx ZipMap: a sequence of {label: probability}; ship it as a 2-D tensor.
                if value and not isinstance(value[0], dict):
                    raise BatchError(
                        "InferenceError", f"model {model['key']!r}: output {name!r} is a sequence"
                    )
                value = zipmap_to_array(value)[0]
            ops = model["postprocess"].get(name)
            if ops is not None:
                value = apply_post_ops(value, ops)
            result[name] = value
        return result

    def _write(self, outputs: dict[str, Any], seg: ipc.Segment) -> tuple[list[dict[str, Any]], bytes | None]:
        encoded = {name: [ipc.encode_tensor(v)] for name, v in outputs.items()}
        plan, total = ipc.plan_layout(encoded)
        if total <= seg.size:
            return ipc.write_layout(seg.buf, plan), None
        payload, headers = ipc.pack_bytes(plan, total)
        return headers, payload

    def close(self) -> None:
        for seg in self.segments.values():
            seg.close()
        self.segments.clear()


_OPT_LEVELS = {
    "disable": lambda ort: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def worker_main(worker_id: int, config: dict[str, Any], requests: Any, responses: Any) -> None:
    """Entry point of a worker process (``requests``/``responses`` are one-way Connections)."""
    # Ctrl-C reaches the whole process group; the pool decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from inference.devices import choose_device

    choice = choose_device(config["device"], config["gpu_index"], config.get("probe"))
    threads = config["threads_cuda"] if choice.device.startswith("cuda") else config["threads_cpu"]
    worker = Worker(worker_id, choice.providers, choice.device, threads)
    ready = {"type": "ready", "pid": os.getpid(), "device": choice.device, "reason": choice.reason}
    ready.update(providers=[p if isinstance(p, str) else p[0] for p in choice.providers], threads=threads)
    responses.send_bytes(ipc.dumps(ready))
    try:
        _serve(worker, requests, responses)
    finally:
        worker.close()


def _serve(worker: Worker, requests: Any, responses: Any) -> None:
    while True:
        try:
            msg = ipc.loads(requests.recv_bytes())
        except (EOFError, OSError):
            return  # the pool is gone
        if msg["type"] == "stop":
            return
        try:
            reply, payload = worker.run(msg)
        except BatchError as exc:
            reply, payload = (
                {"type": "error", "seq": msg["seq"], "error": exc.kind, "message": str(exc)},
                None,
            )
        except Exception as exc:  # a bug or an unexpected ORT output: report it, keep serving
            key = (worker.models.get(msg["ident"]) or {}).get("key", "?")
            message = f"model {key!r}: {type(exc).__name__}: {exc}"
            reply, payload = (
                {"type": "error", "seq": msg["seq"], "error": "InferenceError", "message": message},
                None,
            )
        responses.send_bytes(ipc.dumps(reply))
        if payload is not None:
            responses.send_bytes(payload)
