"""The model-assertions demo world (``server.demo_video``) for tests: installing it into a live
server, the assertions' answers computed here from the known detections, and their scoring
against the injected errors.

Keys are tuples in the assertion's key order: ``(frame,)`` for flicker, ``(frame, box_id)`` for
the box assertions. The true-positive rate of an assertion is the share of its kind's injected
errors whose key it flags; its precision is the share of its flags that name an injected error of
its kind (strict: a phantom that ``multibox`` happens to flag counts against ``multibox``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from server.demo_video import Detection, VideoWorld, install_video_demo

KIND_OF = {"flicker": "flicker", "multibox": "multibox", "phantom": "phantom", "odd_boxes": "wrong_size"}
KEY_COLUMNS = {"flicker": ("frame",), "multibox": ("frame", "box_id"), "phantom": ("frame", "box_id")}
KEY_COLUMNS["odd_boxes"] = ("frame", "box_id")


def install(dsn: str, models_dir: Path, world: VideoWorld) -> dict[str, int]:
    """Install the demo's tables, detector and views through the demo's own installer."""

    async def run() -> dict[str, int]:
        conn = await asyncpg.connect(dsn)
        try:
            return await install_video_demo(conn, models_dir, world)
        finally:
            await conn.close()

    return asyncio.run(run())


def injected(world: VideoWorld, assertion: str) -> set[tuple]:
    """The keys of the injected errors an assertion is meant to find."""
    kind = KIND_OF[assertion]
    return {(e.frame,) if e.box_id is None else (e.frame, e.box_id) for e in world.errors if e.kind == kind}


def key_of(assertion: str, key: dict) -> tuple:
    """A ``sieve.violations.key`` (jsonb, as a dict) as a key tuple."""
    return tuple(int(key[c]) for c in KEY_COLUMNS[assertion])


@dataclass(frozen=True)
class Score:
    injected: int
    flagged: int
    found: int  # injected errors flagged

    @property
    def tpr(self) -> float:
        return self.found / self.injected if self.injected else float("nan")

    @property
    def precision(self) -> float:
        return self.found / self.flagged if self.flagged else float("nan")


def score(flagged: Iterable[tuple], truth: set[tuple]) -> Score:
    flags = set(flagged)
    return Score(len(truth), len(flags), len(flags & truth))


def recall_at(ranked: list[tuple], truth: set[tuple], k: int) -> float:
    """Share of ``truth`` among the first ``k`` keys of ``ranked`` (highest severity first)."""
    return len(set(ranked[:k]) & truth) / len(truth)


# -- the assertions' answers, computed here ---------------------------------------------------------


def _by_frame(world: VideoWorld) -> dict[int, list[Detection]]:
    frames: dict[int, list[Detection]] = defaultdict(list)
    for d in world.detections:
        frames[d.frame].append(d)
    return frames


def _iou(a: Detection, b: Detection) -> float:
    w = max(0.0, min(a.x_max, b.x_max) - max(a.x_min, b.x_min))
    h = max(0.0, min(a.y_max, b.y_max) - max(a.y_min, b.y_min))
    union = (a.x_max - a.x_min) * (a.y_max - a.y_min) + (b.x_max - b.x_min) * (b.y_max - b.y_min) - w * h
    return w * h / union if union else 0.0


def _overlap(a: Detection, b: Detection) -> bool:
    return a.x_min < b.x_max and b.x_min < a.x_max and a.y_min < b.y_max and b.y_min < a.y_max


def expected_flags(world: VideoWorld, assertion: str) -> set[tuple]:
    """What the assertion's query must flag, from the detections the model gives."""
    frames = _by_frame(world)
    n_frames = len(world.pixels)
    if assertion == "flicker":
        cars = [sum(d.label == "car" for d in frames.get(t, [])) for t in range(n_frames)]
        return {(t,) for t in range(1, n_frames - 1) if cars[t] == 0 and cars[t - 1] > 0 and cars[t + 1] > 0}
    if assertion == "multibox":
        return {
            (b.frame, b.box_id)
            for boxes in frames.values()
            for a in boxes
            for b in boxes
            if a.box_id < b.box_id and _iou(a, b) > 0.7
        }
    if assertion == "phantom":
        return {
            (d.frame, d.box_id)
            for d in world.detections
            if not any(
                o.label == d.label and _overlap(o, d)
                for t in (d.frame - 1, d.frame + 1)
                for o in frames.get(t, [])
            )
        }
    raise ValueError(f"no reference for {assertion}")
