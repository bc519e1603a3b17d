"""``ModelRef``: which model to run and how, as the pool and its workers see it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_SPLITS = ("auto", "rows", "row_index")
_SESSION_KEYS = {
    "intra_op_num_threads",
    "inter_op_num_threads",
    "graph_optimization_level",
    "enable_mem_pattern",
    "enable_cpu_mem_arena",
    "config",
    "device",
}


@dataclass(frozen=True)
class ModelRef:
    """A model to run.

    key: the model's identity for stats and logs, e.g. ``"digit_oracle@3"``.
    path: the ONNX file.
    session_options: optional ONNX Runtime settings: ``intra_op_num_threads``,
        ``inter_op_num_threads``, ``graph_optimization_level`` (disable|basic|extended|all),
        ``enable_mem_pattern``, ``enable_cpu_mem_arena``, ``config`` (session config entries) and
        ``device`` ("cpu" keeps a cheap proxy model off the GPU).
    preprocess: input name -> preprocessing options (``inference.preprocess``), run in the worker.
    postprocess: output name -> post-ops (``inference.preprocess.apply_post_ops``), run in the worker.
    outputs: the outputs to fetch (None: all).
    split: how batch outputs go back to callers. ``rows``: every output has one row per input row.
        ``row_index``: the first output is a row-index column (``[M]`` or ``[M, k]`` whose column 0
        is the input row); every output with ``M`` rows is split by it, and the index is renumbered
        to each caller's own rows. ``auto``: ``row_index`` when the first output is an integer
        tensor whose length differs from the batch's row count, else ``rows``.
    """

    key: str
    path: str
    session_options: Mapping[str, Any] | None = None
    preprocess: Mapping[str, Mapping[str, Any]] | None = None
    postprocess: Mapping[str, Any] | None = None
    outputs: tuple[str, ...] | None = None
    split: str = "auto"
    ident: str = field(init=False, repr=False, compare=False)
    wire: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", os.fspath(self.path))
        if self.split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, not {self.split!r}")
        unknown = set(self.session_options or {}) - _SESSION_KEYS
        if unknown:
            raise ValueError(f"unknown session option(s) {sorted(unknown)} for model {self.key!r}")
        level = (self.session_options or {}).get("graph_optimization_level", "all")
        if level not in ("disable", "basic", "extended", "all"):
            raise ValueError(f"graph_optimization_level must be disable|basic|extended|all, not {level!r}")
        if self.outputs is not None:
            object.__setattr__(self, "outputs", tuple(self.outputs))
        # Everything a worker needs to build (and cache) the session: requests with the same
        # ident share a session and may share a batch.
        object.__setattr__(self, "wire", self.to_wire())
        object.__setattr__(self, "ident", json.dumps(self.wire, sort_keys=True))

    def __hash__(self) -> int:
        return hash(self.ident)

    def to_wire(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": self.path,
            "session_options": dict(self.session_options or {}),
            "preprocess": {k: dict(v) for k, v in (self.preprocess or {}).items()},
            "postprocess": dict(self.postprocess or {}),
            "outputs": list(self.outputs) if self.outputs is not None else None,
        }
