"""How tensors cross the process boundary: raw buffers plus small JSON headers, never pickles.

A batch of named tensors is laid out in one buffer (a shared-memory segment, or as a fallback a
``bytes`` payload sent through the pipe). A header lists, per tensor, where it lies::

    {"name": "X", "kind": "raw", "dtype": "<f4", "shape": [512, 64], "offset": 0, "nbytes": 131072}
    {"name": "text", "kind": "str", "shape": [512], "offset": 131072, "nbytes": 4104,
     "data_offset": 135232, "data_nbytes": 20480}

``raw`` tensors are numeric/bool arrays stored C-contiguously. ``str`` / ``bytes`` tensors are one
blob of UTF-8 (or raw) bytes plus an int64 array of ``count + 1`` offsets into it, so a text batch is
two memcpys, not one pickle per row.

Several callers' arrays are concatenated straight into the destination buffer (``TensorParts``),
so batching costs one copy per input row, in the parent only: the worker reads views in place.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

_ALIGN = 64  # cache-line alignment keeps every tensor view aligned for ORT and numpy


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


@dataclass(frozen=True)
class EncodedTensor:
    """One caller's value for one input, ready to be concatenated with others.

    For ``raw`` tensors ``array`` holds the data; for ``str``/``bytes`` tensors ``lengths`` holds the
    byte length of every element (row-major) and ``blob`` their concatenation.
    """

    kind: str  # "raw" | "str" | "bytes"
    shape: tuple[int, ...]
    array: np.ndarray | None = None
    lengths: np.ndarray | None = None
    blob: bytes = b""

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Values with equal keys can be concatenated along the first axis."""
        dtype = self.array.dtype.str if self.array is not None else None
        return (self.kind, dtype, self.shape[1:])


def encode_tensor(value: Any) -> EncodedTensor:
    """Prepare an array (numeric, bool, str or bytes elements) for transport."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if arr.ndim == 0:
        raise ValueError("inputs need a leading row dimension, got a scalar")
    if arr.dtype.kind in "biufc":
        return EncodedTensor("raw", arr.shape, array=np.ascontiguousarray(arr))
    if arr.dtype.kind in "US" or arr.dtype == object:
        return _encode_strings(arr)
    raise TypeError(f"unsupported tensor dtype {arr.dtype}")


def _encode_strings(arr: np.ndarray) -> EncodedTensor:
    flat = arr.reshape(-1)
    if arr.dtype.kind == "S":
        items = [bytes(x) for x in flat]
        kind = "bytes"
    elif arr.dtype.kind == "U":
        items = [str(x).encode("utf-8") for x in flat]
        kind = "str"
    else:
        kind = "bytes" if flat.size and isinstance(flat[0], bytes | bytearray | memoryview) else "str"
        items = [bytes(x) for x in flat] if kind == "bytes" else [str(x).encode("utf-8") for x in flat]
    lengths = np.fromiter((len(b) for b in items), dtype=np.int64, count=len(items))
    return EncodedTensor(kind, arr.shape, lengths=lengths, blob=b"".join(items))


# -----------------------------------------------------------------------------------------------
# Layout


@dataclass
class _Planned:
    name: str
    parts: Sequence[EncodedTensor]
    header: dict[str, Any]


def plan_layout(tensors: dict[str, Sequence[EncodedTensor]]) -> tuple[list[_Planned], int]:
    """Assign offsets to each tensor (parts concatenated); return the plan and total bytes."""
    plan: list[_Planned] = []
    offset = 0
    for name, parts in tensors.items():
        first = parts[0]
        rows = sum(p.rows for p in parts)
        header: dict[str, Any] = {"name": name, "kind": first.kind, "shape": [rows, *first.shape[1:]]}
        if first.kind == "raw":
            assert first.array is not None
            nbytes = sum(p.array.nbytes for p in parts)  # type: ignore[union-attr]
            header.update(dtype=first.array.dtype.str, offset=offset, nbytes=nbytes)
            offset = _align(offset + nbytes)
        else:
            count = sum(len(p.lengths) for p in parts)  # type: ignore[arg-type]
            data_nbytes = sum(len(p.blob) for p in parts)
            header.update(offset=offset, nbytes=(count + 1) * 8)
            offset = _align(offset + (count + 1) * 8)
            header.update(data_offset=offset, data_nbytes=data_nbytes)
            offset = _align(offset + data_nbytes)
        plan.append(_Planned(name, parts, header))
    return plan, offset


def write_layout(buf: memoryview, plan: list[_Planned]) -> list[dict[str, Any]]:
    """Copy every planned tensor into ``buf``; return the headers describing them."""
    for item in plan:
        h = item.header
        if h["kind"] == "raw":
            dst = np.ndarray(tuple(h["shape"]), dtype=np.dtype(h["dtype"]), buffer=buf, offset=h["offset"])
            row = 0
            for part in item.parts:
                dst[row : row + part.rows] = part.array
                row += part.rows
            del dst
        else:
            _write_strings(buf, item.parts, h)
    return [item.header for item in plan]


def _write_strings(buf: memoryview, parts: Sequence[EncodedTensor], h: dict[str, Any]) -> None:
    count = h["nbytes"] // 8 - 1
    offsets = np.ndarray((count + 1,), dtype=np.int64, buffer=buf, offset=h["offset"])
    offsets[0] = 0
    lengths = parts[0].lengths if len(parts) == 1 else np.concatenate([p.lengths for p in parts])
    np.cumsum(lengths, out=offsets[1:])
    del offsets
    pos = h["data_offset"]
    for part in parts:
        buf[pos : pos + len(part.blob)] = part.blob
        pos += len(part.blob)


def pack_bytes(plan: list[_Planned], total: int) -> tuple[bytes, list[dict[str, Any]]]:
    """Fallback when the shared segment is too small: the same layout in a private buffer."""
    scratch = bytearray(total)
    with memoryview(scratch) as view:
        headers = write_layout(view, plan)
    return bytes(scratch), headers


def read_tensors(buf: memoryview | bytes, headers: Iterable[dict[str, Any]], *, copy: bool) -> dict[str, Any]:
    """Arrays described by ``headers``; views into ``buf`` unless ``copy`` (strings always copy)."""
    out: dict[str, Any] = {}
    for h in headers:
        if h["kind"] == "raw":
            arr = np.ndarray(tuple(h["shape"]), dtype=np.dtype(h["dtype"]), buffer=buf, offset=h["offset"])
            out[h["name"]] = arr.copy() if copy else arr
        else:
            out[h["name"]] = _read_strings(buf, h)
    return out


def _read_strings(buf: memoryview | bytes, h: dict[str, Any]) -> np.ndarray:
    count = h["nbytes"] // 8 - 1
    offsets = np.ndarray((count + 1,), dtype=np.int64, buffer=buf, offset=h["offset"]).tolist()
    start = h["data_offset"]
    data = bytes(buf[start : start + h["data_nbytes"]])
    if h["kind"] == "str":
        items: list[Any] = [data[a:b].decode("utf-8") for a, b in zip(offsets, offsets[1:], strict=False)]
    else:
        items = [data[a:b] for a, b in zip(offsets, offsets[1:], strict=False)]
    out = np.empty(count, dtype=object)
    out[:] = items
    return out.reshape(tuple(h["shape"]))


# -----------------------------------------------------------------------------------------------
# Headers and segments


def dumps(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def loads(data: bytes) -> dict[str, Any]:
    return json.loads(data)


class Segment:
    """A shared-memory segment. The pool process creates and unlinks every segment; workers only
    attach, so a crashed worker can never leak one."""

    def __init__(self, name: str, size: int = 0, *, create: bool = False) -> None:
        self.shm = shared_memory.SharedMemory(name=name, create=create, size=size if create else 0)
        self.name = name
        self.size = self.shm.size
        self.owner = create
        if create:
            self._reserve()

    def _reserve(self) -> None:
        # tmpfs allocates pages on first touch: a full /dev/shm (64 MiB in Docker by default)
        # would kill the writer with SIGBUS. Reserving now turns that into an OSError here.
        try:
            os.posix_fallocate(self.shm._fd, 0, self.size)  # type: ignore[attr-defined]
        except AttributeError:
            return  # not POSIX
        except OSError as exc:
            self.close()
            raise MemoryError(f"cannot reserve {self.size} bytes of shared memory: {exc}") from exc

    @property
    def buf(self) -> memoryview:
        return self.shm.buf  # type: ignore[return-value]

    def close(self) -> None:
        # BufferError: a view is still alive somewhere; the mapping goes away with it.
        with contextlib.suppress(BufferError):
            self.shm.close()
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()
            self.owner = False
