"""Opening an ONNX Runtime session on a model file, including files written by newer tools.

The ``onnx`` package stamps models with its own IR version (onnx 1.23: IR 14) whatever the
operators they use, and ONNX Runtime refuses an IR version newer than it knows even when every
operator is one it runs. Such a file is loaded as the newest IR the runtime reads (in memory:
the file, and so its content hash, stay as they are). What cannot load that way fails with the
runtime's limits and how to convert the model.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("sievedb.inference.loading")

_IR_TOO_NEW = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
_OPSET_TOO_NEW = re.compile(r"Opset (\d+) is under development.*?domain (\S+) is till opset (\d+)", re.DOTALL)
# ORT keeps external weights beside the file; a model given as bytes must be told where
_EXTERNAL_DATA_DIR = "session.model_external_initializers_file_folder_path"


class UnsupportedModel(Exception):
    """ONNX Runtime cannot load the model; the message says why and what to do."""


def open_session(path: str | Path, options: Any, providers: list) -> Any:
    """``onnxruntime.InferenceSession`` on ``path``; a model stamped with an IR version newer
    than the runtime's is loaded as the runtime's newest. Raises UnsupportedModel (with advice)
    when the runtime's limits are the reason it cannot load, else what ONNX Runtime raised."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        too_new = _IR_TOO_NEW.search(str(exc))
        if too_new is None:
            raise _explained(exc, None) from exc
        file_ir, max_ir = int(too_new.group(1)), int(too_new.group(2))
    log.info(
        "model %s: IR version %d is newer than this runtime's %d; loading it as %d",
        path,
        file_ir,
        max_ir,
        max_ir,
    )
    options.add_session_config_entry(_EXTERNAL_DATA_DIR, str(Path(path).resolve().parent))
    try:
        return ort.InferenceSession(_with_ir_version(path, max_ir), options, providers=providers)
    except Exception as exc:
        raise _explained(exc, (file_ir, max_ir)) from exc


def _with_ir_version(path: str | Path, ir_version: int) -> bytes:
    import onnx  # only for this rare path: workers do not import onnx otherwise

    model = onnx.load(str(path), load_external_data=False)
    model.ir_version = ir_version
    return model.SerializeToString()


def _explained(exc: Exception, ir: tuple[int, int] | None) -> Exception:
    """UnsupportedModel with advice when the runtime's version limits are the cause, else ``exc``."""
    import onnxruntime as ort

    runtime = f"ONNX Runtime {ort.__version__}"
    opset = _OPSET_TOO_NEW.search(str(exc))
    if opset is not None:
        wanted, domain, newest = int(opset.group(1)), opset.group(2), int(opset.group(3))
        read_as = f" (its IR version {ir[0]} was read as {ir[1]})" if ir else ""
        return UnsupportedModel(
            f"the model imports opset {wanted} of domain {domain}, and {runtime} supports up to "
            f"opset {newest}{read_as}; convert it, e.g. onnx.version_converter.convert_version(model, "
            f"{newest}), or export it again with opset {newest} (torch.onnx.export(..., "
            f"opset_version={newest}), skl2onnx to_onnx(..., target_opset={newest}))"
        )
    if ir is not None:
        return UnsupportedModel(
            f"the model's IR version {ir[0]} is newer than {runtime} reads (up to {ir[1]}), and it "
            f"does not load as IR {ir[1]}: {_short(exc)}; export it with an onnx package whose IR "
            f"version is {ir[1]} or lower, or convert it with onnx.version_converter"
        )
    return exc


def _short(exc: Exception) -> str:
    """ORT's message without the C++ source location and signature in front of it."""
    text = str(exc).strip()
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (/\S+:\d+ .*?\) )?", "", text)
