"""Model introspection: what an ONNX file takes and returns, without running it.

``load_signature`` parses the file with ``onnx`` (weights stay on disk when they are external) and,
by default, also builds a CPU ``InferenceSession`` so that a file ONNX Runtime cannot load is
rejected at registration time rather than at the first query. ``read_signature`` does the same
without blocking an event loop; ``python -m inference.signature FILE`` prints it as JSON.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from inference.errors import ModelLoadError, ModelNotFoundError
from inference.loading import open_session

log = logging.getLogger("sievedb.inference.signature")

Dim = int | str | None

# Files up to this size are read in a thread of the calling process. Larger ones in a child
# process: the protobuf parse holds the GIL (measured: 0.54 s of stalled event loop for a 256 MB
# file) and the parsed copy of the weights would stay in the server's memory.
IN_PROCESS_MAX_BYTES = 16 << 20
CHILD_TIMEOUT_S = 600.0

# ONNX TensorProto.DataType codes -> the short names used everywhere in SieveDB.
_ELEM_TYPES: dict[int, str] = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
}


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output.

    ``kind`` is ``"tensor"`` for plain tensors, ``"sequence"`` / ``"map"`` for ONNX-ML values (a
    scikit-learn ZipMap output is ``kind="sequence"``, ``type_str="seq(map(int64,float32))"``).
    ``elem_type`` is the tensor element type, or the value type of a map / sequence.
    ``shape`` holds ints for fixed dims, the symbol for named dims and None for unknown dims;
    it is None when the rank itself is unknown or the value is not a tensor.
    """

    name: str
    kind: str
    elem_type: str
    shape: tuple[Dim, ...] | None
    type_str: str


@dataclass(frozen=True)
class ModelSignature:
    """Inputs, outputs and identity of an ONNX model file."""

    path: str
    sha256: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    opsets: dict[str, int]
    producer: str

    def input(self, name: str) -> TensorInfo:
        return _by_name(self.inputs, name, "input")

    def output(self, name: str) -> TensorInfo:
        return _by_name(self.outputs, name, "output")

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


def _by_name(items: tuple[TensorInfo, ...], name: str, what: str) -> TensorInfo:
    for item in items:
        if item.name == name:
            return item
    raise KeyError(f"model has no {what} named {name!r}")


def elem_type_name(code: int) -> str:
    """Short name of an ONNX element type code (``1`` -> ``"float32"``)."""
    return _ELEM_TYPES.get(code, f"onnx_type_{code}")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the file bytes (the model's content identity)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_signature(path: str | os.PathLike[str], *, validate: bool = True) -> ModelSignature:
    """Describe the ONNX model at ``path``.

    Raises ModelNotFoundError when the file is missing, ModelLoadError (naming the file) when it is
    not ONNX, is corrupt, or (with ``validate``) cannot be loaded by ONNX Runtime on CPU.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelNotFoundError(f"model file not found: {p}")
    model = _parse(p)
    if validate:
        _check_loadable(p)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    # Old IR versions list initializers among the inputs; they are weights, not parameters.
    inputs = tuple(_tensor_info(v) for v in graph.input if v.name not in initializers)
    outputs = tuple(_tensor_info(v) for v in graph.output)
    return ModelSignature(
        path=str(p),
        sha256=file_sha256(p),
        inputs=inputs,
        outputs=outputs,
        opsets={o.domain or "ai.onnx": o.version for o in model.opset_import},
        producer=model.producer_name,
    )


async def read_signature(path: str | os.PathLike[str], *, validate: bool = True) -> ModelSignature:
    """``load_signature`` off the event loop: in a worker thread for small files, in a child
    process for large ones. Raises what ``load_signature`` raises."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError:
        raise ModelNotFoundError(f"model file not found: {p}") from None
    if size <= IN_PROCESS_MAX_BYTES:
        return await asyncio.to_thread(load_signature, p, validate=validate)
    return await _signature_in_child(p, validate)


async def _signature_in_child(p: Path, validate: bool) -> ModelSignature:
    args = [sys.executable, "-m", "inference.signature", str(p)]
    if not validate:
        args.append("--no-validate")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CHILD_TIMEOUT_S)
    except BaseException:  # cancelled (the client went away) or too slow: do not leave it running
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    try:
        reply = json.loads(out)
    except ValueError:
        tail = err.decode(errors="replace").strip()[-500:]
        raise ModelLoadError(f"{p}: reading it failed (exit status {proc.returncode}): {tail}") from None
    if "error" in reply:
        error = ModelNotFoundError if reply["error"] == "ModelNotFoundError" else ModelLoadError
        raise error(reply["message"])
    return signature_from_dict(reply)


def signature_to_dict(sig: ModelSignature) -> dict:
    return asdict(sig)


def signature_from_dict(data: dict) -> ModelSignature:
    def tensor(t: dict) -> TensorInfo:
        shape = None if t["shape"] is None else tuple(t["shape"])
        return TensorInfo(t["name"], t["kind"], t["elem_type"], shape, t["type_str"])

    return ModelSignature(
        path=data["path"],
        sha256=data["sha256"],
        inputs=tuple(tensor(t) for t in data["inputs"]),
        outputs=tuple(tensor(t) for t in data["outputs"]),
        opsets=dict(data["opsets"]),
        producer=data["producer"],
    )


def main(argv: list[str] | None = None) -> int:
    """The child side of ``read_signature``: one JSON object on stdout, the signature or the error."""
    args = sys.argv[1:] if argv is None else argv
    try:
        reply = signature_to_dict(load_signature(args[0], validate="--no-validate" not in args))
    except (ModelNotFoundError, ModelLoadError) as exc:
        reply = {"error": type(exc).__name__, "message": str(exc)}
    sys.stdout.write(json.dumps(reply))
    return 0


def _parse(p: Path):  # -> onnx.ModelProto
    import onnx  # imported here: workers never need it

    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning, ValueError...
        raise ModelLoadError(f"{p} is not a valid ONNX model: {exc}") from exc
    # Arbitrary bytes can parse as an (almost) empty protobuf message: demand a real graph.
    if model.ir_version <= 0 or not model.graph.output:
        raise ModelLoadError(f"{p} is not a valid ONNX model: no graph outputs or IR version")
    return model


def _check_loadable(p: Path) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    try:
        open_session(p, opts, ["CPUExecutionProvider"])  # as the workers will: newer IR versions too
    except Exception as exc:
        raise ModelLoadError(f"{p} cannot be loaded by ONNX Runtime: {exc}") from exc


def _tensor_info(value) -> TensorInfo:  # value: onnx.ValueInfoProto
    kind, elem, shape, text = _describe_type(value.type)
    return TensorInfo(name=value.name, kind=kind, elem_type=elem, shape=shape, type_str=text)


def _describe_type(tp) -> tuple[str, str, tuple[Dim, ...] | None, str]:
    which = tp.WhichOneof("value")
    if which == "tensor_type":
        elem = elem_type_name(tp.tensor_type.elem_type)
        shape = _shape(tp.tensor_type)
        return "tensor", elem, shape, f"tensor({elem})"
    if which == "sequence_type":
        _, elem, _, inner = _describe_type(tp.sequence_type.elem_type)
        return "sequence", elem, None, f"seq({inner})"
    if which == "map_type":
        key = elem_type_name(tp.map_type.key_type)
        _, elem, _, inner = _describe_type(tp.map_type.value_type)
        return "map", elem, None, f"map({key},{inner.removeprefix('tensor(').removesuffix(')')})"
    if which == "optional_type":
        kind, elem, shape, inner = _describe_type(tp.optional_type.elem_type)
        return kind, elem, shape, f"optional({inner})"
    return "unknown", "unknown", None, str(which)


def _shape(tensor_type) -> tuple[Dim, ...] | None:
    if not tensor_type.HasField("shape"):
        return None
    dims: list[Dim] = []
    for d in tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


if __name__ == "__main__":
    sys.exit(main())
