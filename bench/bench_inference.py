"""Throughput of the inference pool against a bare ONNX Runtime loop over the same rows.

    .venv/bin/python bench/bench_inference.py [--device cpu|cuda] [--seconds 0.5] [--trials 7]

For each model (the digits MLP oracle, and a wide 64->2048->2048->10 MLP) it measures:

1. bare: ``InferenceSession.run`` in a loop over the rows, at every candidate batch size; the
   best batch size B is kept (the session uses ONNX Runtime's default threading).
2. pool, single stream: one caller awaiting ``pool.infer`` on B rows at a time.
3. pool, 8 callers: eight concurrent callers, each sending B rows, and each sending B/8 rows (then
   only the dynamic batcher can build batches of B).
4. single-stream pool/bare at every candidate batch size (the pool's fixed cost per request is
   what separates them at small batches).

Trials of bare and pool alternate so that load from other processes hits both alike; the median
trial is reported. ``--device cuda`` runs both on CUDA, or says why it cannot and uses the CPU.

Keep the module's top level light: worker processes are spawned and re-import it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH_CANDIDATES = (64, 256, 1024, 4096, 16384)
CALLERS = 8


def build_models(out: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """The digits MLP (scikit-learn, real digits) and a wide random MLP, with their input rows."""
    import warnings

    from onnx import TensorProto, helper, numpy_helper
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=150, random_state=0).fit(x, y)
    digits = to_onnx(clf, x[:1], target_opset=17, options={id(clf): {"zipmap": False}})
    digits.ir_version = 8
    (out / "digits_mlp.onnx").write_bytes(digits.SerializeToString())

    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "X"
    dims = [64, 2048, 2048, 10]
    for i, (a, b) in enumerate(zip(dims, dims[1:], strict=False)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}"),
        ]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"]))
        prev = f"g{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("ArgMax", [prev], ["label"], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes,
        "wide_mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])],
        inits,
    )
    wide = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    wide.ir_version = 8
    (out / "wide_mlp.onnx").write_bytes(wide.SerializeToString())
    return {
        # Real digits repeated; row counts divisible by every candidate batch size.
        "digits_mlp": (out / "digits_mlp.onnx", np.tile(x, (19, 1))[:32768]),
        "wide_mlp_2048": (out / "wide_mlp.onnx", np.tile(x, (5, 1))[:8192]),
    }


# -- bare ONNX Runtime ------------------------------------------------------------------------------


def providers_for(device: str) -> list:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]


def cuda_works() -> tuple[bool, str]:
    import onnxruntime as ort

    from inference.devices import choose_device, probe_model_bytes

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, "this onnxruntime build has no CUDA execution provider"
    choice = choose_device("cuda", 0, probe_model_bytes())
    return choice.device.startswith("cuda"), choice.reason


def bare_rate(session, x: np.ndarray, batch: int, seconds: float) -> float:
    name = session.get_inputs()[0].name
    session.run(None, {name: x[:batch]})  # warm-up: allocations, kernels
    offsets = range(0, len(x), batch)
    rows, start, k = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        i = offsets[k % len(offsets)]
        rows += len(session.run(None, {name: x[i : i + batch]})[0])
        k += 1
    return rows / (time.perf_counter() - start)


# -- the pool -----------------------------------------------------------------------------------------


async def stream(pool, ref, x: np.ndarray, batch: int, stop_at: float, first: int) -> int:
    offsets = range(0, len(x), batch)
    rows, k = 0, first
    while time.perf_counter() < stop_at:
        i = offsets[k % len(offsets)]
        rows += len((await pool.infer(ref, {"X": x[i : i + batch]}))["label"])
        k += 1
    return rows


async def pool_rate(pool, ref, x: np.ndarray, batch: int, callers: int, seconds: float) -> float:
    await asyncio.gather(*(pool.infer(ref, {"X": x[:batch]}) for _ in range(callers)))  # warm-up
    start = time.perf_counter()
    # Every caller walks all the rows, in requests of ``batch`` rows.
    done = await asyncio.gather(*(stream(pool, ref, x, batch, start + seconds, c) for c in range(callers)))
    return sum(done) / (time.perf_counter() - start)


# -- driver -------------------------------------------------------------------------------------------


def best_batch(session, x: np.ndarray, seconds: float) -> tuple[int, dict[int, float]]:
    rates = {b: bare_rate(session, x, b, seconds) for b in BATCH_CANDIDATES if b <= len(x)}
    return max(rates, key=rates.__getitem__), rates


def same_settings_session(path: Path, device: str, workers: int):
    """A bare session configured like a pool worker's (threads, no spinning), for reference."""
    import onnxruntime as ort

    from inference.devices import default_intra_op_threads

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = default_intra_op_threads(workers, device)
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=providers_for(device))


async def bench_model(name: str, path: Path, x: np.ndarray, device: str, args) -> dict:
    import onnxruntime as ort

    from inference import InferencePool, ModelRef

    session = ort.InferenceSession(str(path), providers=providers_for(device))
    batch, scan = best_batch(session, x, args.seconds)
    print(f"  {name}: bare ORT rows/s by batch size: " + ", ".join(f"{b}: {r:,.0f}" for b, r in scan.items()))
    ref = ModelRef(f"{name}@bench", path)
    trials: dict[str, list[float]] = {k: [] for k in ("bare", "bare_same", "single", "8x B", "8x B/8")}
    pool = InferencePool(
        workers=args.workers, max_batch_rows=batch, max_wait_ms=args.max_wait_ms, device=device
    )
    async with pool:
        same = same_settings_session(path, device, len(pool.workers()))
        await pool.infer(ref, {"X": x[:batch]})
        for _ in range(args.trials):
            trials["bare"].append(bare_rate(session, x, batch, args.seconds))
            trials["single"].append(await pool_rate(pool, ref, x, batch, 1, args.seconds))
            trials["8x B"].append(await pool_rate(pool, ref, x, batch, CALLERS, args.seconds))
            small = max(1, batch // CALLERS)
            trials["8x B/8"].append(await pool_rate(pool, ref, x, small, CALLERS, args.seconds))
            trials["bare_same"].append(bare_rate(same, x, batch, args.seconds))
        stats = pool.stats(ref.key)
        workers = pool.workers()
    by_batch = await ratio_by_batch(ref, path, x, session, device, args)
    med = {k: statistics.median(v) for k, v in trials.items()}
    # Ratios of measurements taken side by side, so that drifting load cancels out.
    paired = {
        "single/bare": _paired(trials["single"], trials["bare"]),
        "single/bare_same": _paired(trials["single"], trials["bare_same"]),
        "8x B/single": _paired(trials["8x B"], trials["single"]),
        "8x B/8/single": _paired(trials["8x B/8"], trials["single"]),
    }
    return {
        "name": name,
        "batch": batch,
        "med": med,
        "paired": paired,
        "stats": stats,
        "workers": workers,
        "by_batch": by_batch,
    }


async def ratio_by_batch(ref, path: Path, x: np.ndarray, session, device: str, args) -> dict[int, float]:
    """Single-stream pool/bare at every candidate batch size (median of 3 neighbouring pairs)."""
    from inference import InferencePool

    ratios = {}
    for b in (b for b in BATCH_CANDIDATES if b <= len(x)):
        async with InferencePool(workers=args.workers, max_batch_rows=b, device=device) as pool:
            await pool.infer(ref, {"X": x[:b]})
            pairs = []
            for _ in range(3):
                bare = bare_rate(session, x, b, args.seconds / 2)
                pairs.append(await pool_rate(pool, ref, x, b, 1, args.seconds / 2) / bare)
            ratios[b] = statistics.median(pairs)
    return ratios


def _paired(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def run_on_uvloop(coro):
    import uvloop  # the server's event loop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def report(rows: list[dict], device: str, args) -> None:
    import onnxruntime as ort

    from inference.devices import cpu_count

    w = rows[0]["workers"]
    print(
        f"\nonnxruntime {ort.__version__}, device {w[0].device}, {cpu_count()} CPUs, {len(w)} pool worker(s)"
    )
    print(
        f"{args.trials} alternating trials of {args.seconds:.2f} s; rows/s are medians, ratios are medians of"
    )
    print(
        "ratios between neighbouring trials. bare = default InferenceSession; bare* = the pool's ORT settings"
    )
    head = f"{'model':<15}{'B':>6}{'bare':>12}{'bare*':>12}{'pool 1 stream':>14}{'/bare':>7}{'/bare*':>7}"
    head += f"{'8 callers xB':>14}{'/1':>6}{'8 callers xB/8':>16}{'/1':>6}"
    print(head)
    for r in rows:
        m, p = r["med"], r["paired"]
        line = f"{r['name']:<15}{r['batch']:>6}{m['bare']:>12,.0f}{m['bare_same']:>12,.0f}"
        line += f"{m['single']:>14,.0f}{p['single/bare']:>7.2f}{p['single/bare_same']:>7.2f}"
        line += f"{m['8x B']:>14,.0f}{p['8x B/single']:>6.2f}"
        line += f"{m['8x B/8']:>16,.0f}{p['8x B/8/single']:>6.2f}"
        print(line)
    for r in rows:
        pairs = ", ".join(f"{b}: {q:.2f}" for b, q in r["by_batch"].items())
        print(f"{r['name']}: single-stream pool/bare by batch size: {pairs}")
    for r in rows:
        s = r["stats"]
        recent = s.recent_batch_sizes[-200:]
        print(
            f"{r['name']}: pool batches {s.batches}, mean {s.mean_batch_rows:,.0f} rows (last 200: mean "
            f"{np.mean(recent):,.0f}, max {max(recent)}), model time per row "
            + ", ".join(f"{d} {ms * 1000:.2f} us" for d, ms in s.ms_per_row.items())
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one measurement")
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--workers", type=int, default=None, help="default: one per GPU, else cores - 1")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    args = parser.parse_args()
    device = args.device
    if device == "cuda":
        ok, why = cuda_works()
        if not ok:
            print(f"CUDA is not usable here ({why}); falling back to CPU", file=sys.stderr)
            device = "cpu"
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp))
        print(f"device {device}: finding the best bare batch size, then {args.trials} alternating trials")
        rows = [run_on_uvloop(bench_model(name, path, x, device, args)) for name, (path, x) in models.items()]
    report(rows, device, args)
    print(f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
