"""The model-assertions demo: a synthetic street video, a detector that makes realistic mistakes,
and the assertions that find them (issue 12).

Everything comes from a seed (numpy and ``onnx.helper``; nothing is downloaded or trained).

The scene: a 640x360 street with two car lanes and two sidewalks. Cars and people enter at one
edge and move across at their lane's constant speed (so objects of one lane never overlap), with
a pixel of box jitter per frame. Each frame's ``pixels`` is what a detector backbone would hand
its head: ``SLOTS`` proposals of six floats (objectness, label code, x_min, y_min, x_max, y_max),
then the frame's exposure, then the frame number (so that no two frames share an input). The
ONNX head keeps a proposal when ``objectness * exposure > 0.5``.

Mistakes are injected into the proposals, at most one per frame with two clean frames between two
mistakes, and recorded in ``demo_injected_errors (frame, box_id, kind)``:

* ``flicker``: an under-exposed frame (motion blur) where the head misses every object although
  cars are there; ``box_id`` is NULL, the whole frame is wrong.
* ``multibox``: a second proposal for one object, each edge jittered by ~6% of the box, so the
  head reports the object twice; ``box_id`` is the duplicate (it comes after the frame's objects).
* ``phantom``: a proposal on background clutter (where no object is) with an object's usual size,
  kept for one frame.
* ``wrong_size``: one object's box stretched or squeezed in width or height by 2-2.6x or 0.35-0.55x.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import numpy as np
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger("sievedb.demo")

WIDTH, HEIGHT = 640, 360
LABELS = ("car", "person")
SLOTS = 16
SLOT_FLOATS = 6
EXPOSURE_AT = SLOTS * SLOT_FLOATS
FEATURES = EXPOSURE_AT + 2  # the slots, the exposure, the frame number
MAX_OBJECTS = 12  # true objects on screen at once: a duplicate or phantom still finds a free slot
N_FRAMES = 2000
SEED = 12
ERROR_RATE = 0.12  # chance that a frame (not next to another error) gets one injected mistake
KINDS = ("flicker", "multibox", "phantom", "wrong_size")
OPSET = 17
IR_VERSION = 8  # older ONNX Runtime releases refuse newer IR versions
DETECTOR_FILE = "demo_video_detector.onnx"


@dataclass(frozen=True)
class Lane:
    label: str
    y_center: float
    direction: int  # +1: left to right
    speed: float  # pixels per frame
    widths: tuple[float, float]
    heights: tuple[float, float]
    gaps: tuple[float, float]  # free pixels between one object and the next of its lane


LANES = (
    Lane("person", 105, -1, 1.2, (20, 30), (55, 75), (40, 600)),
    Lane("car", 175, +1, 4.0, (90, 130), (45, 62), (40, 900)),
    Lane("car", 240, -1, 5.0, (90, 130), (45, 62), (40, 900)),
    Lane("person", 305, +1, 1.5, (20, 30), (55, 75), (40, 600)),
)

# -- SQL ----------------------------------------------------------------------------------------

FRAMES_TABLE = "CREATE TABLE IF NOT EXISTS frames (frame int PRIMARY KEY, pixels real[])"
ERRORS_TABLE = (
    "CREATE TABLE IF NOT EXISTS demo_injected_errors (frame int NOT NULL, box_id int, kind text NOT NULL)"
)
DETECTOR_FUNCTION = (
    "CREATE OR REPLACE FUNCTION detect_objects(pixels real[]) RETURNS TABLE (box_id int, label text, "
    "x_min real, y_min real, x_max real, y_max real, score real) LANGUAGE onnx "
    f"AS '{DETECTOR_FILE}', '{json.dumps({'rows': 'row_index', 'max_rows': SLOTS})}'"
)
VIEWS = (
    (
        "detections",
        "CREATE OR REPLACE VIEW detections AS SELECT f.frame, d.box_id, d.label, d.x_min, d.y_min, "
        "d.x_max, d.y_max, d.score FROM frames f, LATERAL detect_objects(f.pixels) d",
    ),
    (
        "car_counts",
        "CREATE OR REPLACE VIEW car_counts AS SELECT f.frame, count(d.box_id) AS n FROM frames f "
        "LEFT JOIN detections d ON d.frame = f.frame AND d.label = 'car' GROUP BY f.frame",
    ),
)


def _overlap(a: str, b: str) -> str:
    return (
        f"{a}.x_min < {b}.x_max AND {b}.x_min < {a}.x_max AND {a}.y_min < {b}.y_max AND {b}.y_min < {a}.y_max"
    )


def _iou(a: str, b: str) -> str:
    inter = (
        f"greatest(0, least({a}.x_max, {b}.x_max) - greatest({a}.x_min, {b}.x_min)) * "
        f"greatest(0, least({a}.y_max, {b}.y_max) - greatest({a}.y_min, {b}.y_min))"
    )
    areas = " + ".join(f"({t}.x_max - {t}.x_min) * ({t}.y_max - {t}.y_min)" for t in (a, b))
    return f"({inter}) / nullif({areas} - {inter}, 0)"


# The queries the assertions run: their columns other than severity are the flagged row's key.
ASSERTION_QUERIES = {
    # exactly the text: a frame where the cars vanish for one frame
    "flicker": (
        "SELECT frame, 1.0 AS severity "
        "FROM (SELECT frame, n, lag(n) OVER w AS prev, lead(n) OVER w AS next "
        "FROM car_counts WINDOW w AS (ORDER BY frame)) s "
        "WHERE n = 0 AND prev > 0 AND next > 0"
    ),
    # two boxes of one frame overlapping with IoU > 0.7: the later box is the flagged one
    "multibox": (
        "SELECT frame, box_id, iou AS severity FROM ("
        f"SELECT b.frame, b.box_id, {_iou('a', 'b')} AS iou "
        "FROM detections a JOIN detections b ON a.frame = b.frame AND a.box_id < b.box_id) p "
        "WHERE iou > 0.7"
    ),
    # a box that no box of its label overlaps in the frame before nor in the frame after
    "phantom": (
        "SELECT d.frame, d.box_id, 1.0 AS severity FROM detections d "
        "LEFT JOIN detections o ON o.frame IN (d.frame - 1, d.frame + 1) AND o.label = d.label "
        f"AND {_overlap('o', 'd')} "
        "GROUP BY d.frame, d.box_id HAVING count(o.box_id) = 0"
    ),
}

ASSERTIONS = {
    **{name: f"CREATE ASSERTION {name} AS {query}" for name, query in ASSERTION_QUERIES.items()},
    "odd_boxes": (
        "CREATE ASSERTION odd_boxes ON detections LEARNED FROM "
        "((x_max - x_min) * (y_max - y_min) AS area, (x_max - x_min) / (y_max - y_min) AS aspect) "
        "PER label KEY (frame, box_id)"
    ),
}

EXAMPLES = (
    "SELECT frame, n FROM car_counts WHERE frame < 20;",
    "SELECT kind, count(*) FROM demo_injected_errors GROUP BY kind;",
    "SELECT sieve.check_assertion('flicker');",
)


# -- the scene ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    label: str
    x_min: float
    y_min: float
    x_max: float
    y_max: float


@dataclass
class _Mover:
    lane: Lane
    x: float  # left edge, unclipped
    w: float
    h: float
    y: float  # top edge


def _spawn(lane: Lane, rng: np.random.Generator) -> tuple[_Mover, float]:
    """A new object at its lane's entry edge, and the frames until the lane's next one."""
    w, h = rng.uniform(*lane.widths), rng.uniform(*lane.heights)
    x = -w if lane.direction > 0 else float(WIDTH)
    mover = _Mover(lane, x, w, h, lane.y_center - h / 2 + rng.uniform(-5, 5))
    return mover, (w + rng.uniform(*lane.gaps)) / lane.speed


def _visible(m: _Mover, rng: np.random.Generator) -> Box | None:
    """The object's box clipped to the frame (with a pixel of jitter); slivers are not seen."""
    x0, x1 = max(0.0, m.x), min(float(WIDTH), m.x + m.w)
    if x1 - x0 < 12:
        return None
    j = rng.normal(0, 0.7, 4)
    return Box(m.lane.label, x0 + j[0], m.y + j[1], x1 + j[2], m.y + m.h + j[3])


def simulate(n_frames: int, rng: np.random.Generator, warm_up: int = 300) -> list[list[Box]]:
    """The true boxes of each frame; the scene runs ``warm_up`` frames first so it starts busy."""
    movers: list[_Mover] = []
    wait = [rng.uniform(0, 60) for _ in LANES]
    frames = []
    for t in range(-warm_up, n_frames):
        for i, lane in enumerate(LANES):
            wait[i] -= 1
            if wait[i] <= 0 and len(movers) < MAX_OBJECTS:
                mover, wait[i] = _spawn(lane, rng)
                movers.append(mover)
        for m in movers:
            m.x += m.lane.direction * m.lane.speed
        movers = [m for m in movers if -m.w <= m.x <= WIDTH]
        if t >= 0:
            frames.append([b for b in (_visible(m, rng) for m in movers) if b is not None])
    return frames


# -- the mistakes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class InjectedError:
    frame: int
    box_id: int | None
    kind: str


def _jittered(b: Box, rng: np.random.Generator) -> Box:
    w, h = b.x_max - b.x_min, b.y_max - b.y_min
    d = rng.normal(0, 0.06, 4) * (w, h, w, h)
    return Box(b.label, b.x_min + d[0], b.y_min + d[1], b.x_max + d[2], b.y_max + d[3])


def _resized(b: Box, rng: np.random.Generator) -> Box:
    factor = rng.uniform(2.0, 2.6) if rng.random() < 0.5 else rng.uniform(0.35, 0.55)
    cx, cy = (b.x_min + b.x_max) / 2, (b.y_min + b.y_max) / 2
    hw, hh = (b.x_max - b.x_min) / 2, (b.y_max - b.y_min) / 2
    if rng.random() < 0.5:
        hw *= factor
    else:
        hh *= factor
    return Box(b.label, max(0.0, cx - hw), max(0.0, cy - hh), min(WIDTH, cx + hw), min(HEIGHT, cy + hh))


def _phantom(boxes: list[Box], rng: np.random.Generator) -> Box:
    """A box of an object's usual size on background clutter: it overlaps nothing in its frame."""
    lane = LANES[int(rng.integers(len(LANES)))]
    while True:
        w, h = rng.uniform(*lane.widths), rng.uniform(*lane.heights)
        x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
        box = Box(lane.label, x, y, x + w, y + h)
        if not any(_boxes_overlap(box, b) for b in boxes):
            return box


def _boxes_overlap(a: Box, b: Box) -> bool:
    return a.x_min < b.x_max and b.x_min < a.x_max and a.y_min < b.y_max and b.y_min < a.y_max


@dataclass(frozen=True)
class FramePlan:
    """What the backbone proposes for one frame: boxes in slot order, their objectness, exposure."""

    boxes: list[Box]
    objectness: list[float]
    exposure: float


def inject(truth: list[list[Box]], rng: np.random.Generator) -> tuple[list[FramePlan], list[InjectedError]]:
    plans, errors, last = [], [], -10
    for t, boxes in enumerate(truth):
        kinds = ["phantom"]
        if boxes:
            kinds += ["multibox", "wrong_size"]
        if any(b.label == "car" for b in boxes):
            kinds.append("flicker")
        kind = None
        if t - last >= 3 and rng.random() < ERROR_RATE:
            kind, last = str(rng.choice(kinds)), t
        plan, error = _plan_frame(t, list(boxes), kind, rng)
        plans.append(plan)
        if error is not None:
            errors.append(error)
    return plans, errors


def _plan_frame(t: int, boxes: list[Box], kind: str | None, rng: np.random.Generator):
    objectness = list(rng.uniform(0.6, 0.99, len(boxes)))
    exposure = float(rng.uniform(0.92, 1.0))
    error = None
    if kind == "flicker":
        exposure = float(rng.uniform(0.2, 0.45))  # the best proposal scores under 0.45
        error = InjectedError(t, None, kind)
    elif kind == "wrong_size":
        i = int(rng.integers(len(boxes)))
        boxes[i] = _resized(boxes[i], rng)
        error = InjectedError(t, i, kind)
    elif kind in ("multibox", "phantom"):
        extra = (
            _jittered(boxes[int(rng.integers(len(boxes)))], rng)
            if kind == "multibox"
            else _phantom(boxes, rng)
        )
        error = InjectedError(t, len(boxes), kind)
        boxes.append(extra)
        objectness.append(float(rng.uniform(0.55, 0.8)))
    return FramePlan(boxes, objectness, exposure), error


# -- the encoding and the detector ----------------------------------------------------------------


def encode(plans: list[FramePlan], rng: np.random.Generator) -> np.ndarray:
    """pixels [frames, FEATURES]: the plans' proposals, then background proposals the head drops."""
    pixels = np.zeros((len(plans), FEATURES), dtype=np.float32)
    for t, plan in enumerate(plans):
        slots = pixels[t, :EXPOSURE_AT].reshape(SLOTS, SLOT_FLOATS)
        for j in range(SLOTS):
            if j < len(plan.boxes):
                b = plan.boxes[j]
                slots[j] = (plan.objectness[j], LABELS.index(b.label), b.x_min, b.y_min, b.x_max, b.y_max)
            else:
                x, y = rng.uniform(0, WIDTH - 40), rng.uniform(0, HEIGHT - 40)
                w, h = rng.uniform(10, 40, 2)
                slots[j] = (rng.uniform(0, 0.45), rng.integers(len(LABELS)), x, y, x + w, y + h)
        pixels[t, EXPOSURE_AT] = plan.exposure
        pixels[t, EXPOSURE_AT + 1] = t
    return pixels


@dataclass(frozen=True)
class Detection:
    frame: int
    box_id: int
    label: str
    x_min: float
    y_min: float
    x_max: float
    y_max: float
    score: float


def detect(pixels: np.ndarray) -> list[Detection]:
    """What ``detect_objects`` answers, computed with numpy in float32 as the ONNX graph does."""
    slots = pixels[:, :EXPOSURE_AT].reshape(len(pixels), SLOTS, SLOT_FLOATS)
    scores = slots[:, :, 0] * pixels[:, EXPOSURE_AT : EXPOSURE_AT + 1]
    out = []
    for t, j in zip(*np.nonzero(scores > np.float32(0.5)), strict=True):
        s = slots[t, j]
        box_id = int(np.count_nonzero(scores[t, :j] > np.float32(0.5)))
        out.append(Detection(int(t), box_id, LABELS[int(s[1])], *map(float, s[2:6]), float(scores[t, j])))
    return out


def _const(name: str, value) -> helper.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def detector_model(path: Path) -> Path:
    """Write the ONNX head: pixels [N, FEATURES] -> one row per kept proposal (``row`` first)."""
    i64 = lambda v: np.array(v, dtype=np.int64)  # noqa: E731
    nodes = [
        _const("starts", i64([0])),
        _const("ends", i64([EXPOSURE_AT])),
        _const("axis1", i64([1])),
        _const("exposure_at", i64([EXPOSURE_AT])),
        _const("exposure_end", i64([EXPOSURE_AT + 1])),
        _const("slot_shape", i64([0, SLOTS, SLOT_FLOATS])),
        _const("half", np.array(0.5, dtype=np.float32)),
        _const("one", i64(1)),
        *(_const(f"i{k}", i64(k)) for k in range(SLOT_FLOATS)),
        helper.make_node("Slice", ["pixels", "starts", "ends", "axis1"], ["flat"]),
        helper.make_node("Reshape", ["flat", "slot_shape"], ["slots"]),
        helper.make_node("Slice", ["pixels", "exposure_at", "exposure_end", "axis1"], ["exposure"]),
        helper.make_node("Gather", ["slots", "i0"], ["objectness"], axis=2),
        helper.make_node("Mul", ["objectness", "exposure"], ["scores"]),
        helper.make_node("Greater", ["scores", "half"], ["kept"]),
        helper.make_node("NonZero", ["kept"], ["nz"]),
        helper.make_node("Transpose", ["nz"], ["where"], perm=[1, 0]),
        helper.make_node("Gather", ["nz", "i0"], ["row"], axis=0),
        helper.make_node("Cast", ["kept"], ["kept_i"], to=TensorProto.INT64),
        helper.make_node("CumSum", ["kept_i", "one"], ["rank1"]),
        helper.make_node("Sub", ["rank1", "one"], ["rank"]),
        helper.make_node("GatherND", ["rank", "where"], ["box_id"]),
        helper.make_node("GatherND", ["scores", "where"], ["score"]),
        helper.make_node("GatherND", ["slots", "where"], ["picked"]),
        helper.make_node("Gather", ["picked", "i1"], ["label_code"], axis=1),
        helper.make_node("Cast", ["label_code"], ["label_index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["label_names", "label_index"], ["label"], axis=0),
        *(
            helper.make_node("Gather", ["picked", f"i{k}"], [name], axis=1)
            for k, name in enumerate(("x_min", "y_min", "x_max", "y_max"), start=2)
        ),
    ]
    floats = ("x_min", "y_min", "x_max", "y_max", "score")
    outputs = [
        helper.make_tensor_value_info("row", TensorProto.INT64, ["M"]),
        helper.make_tensor_value_info("box_id", TensorProto.INT64, ["M"]),
        helper.make_tensor_value_info("label", TensorProto.STRING, ["M"]),
        *(helper.make_tensor_value_info(n, TensorProto.FLOAT, ["M"]) for n in floats),
    ]
    labels = numpy_helper.from_array(np.array(LABELS, dtype=object), "label_names")
    inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", FEATURES])]
    graph = helper.make_graph(nodes, "demo_video_detector", inputs, outputs, [labels])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = min(model.ir_version, IR_VERSION)
    path.write_bytes(model.SerializeToString())
    return path


# -- the world ----------------------------------------------------------------------------------


@dataclass
class VideoWorld:
    pixels: np.ndarray  # float32 [frames, FEATURES]
    truth: list[list[Box]]  # the objects really there, per frame
    detections: list[Detection]  # what detect_objects answers
    errors: list[InjectedError]

    def figures(self) -> dict[str, int]:
        """Frames, true objects, detected boxes and injected errors per kind."""
        counts = {kind: sum(e.kind == kind for e in self.errors) for kind in KINDS}
        return {
            "frames": len(self.pixels),
            "objects": sum(map(len, self.truth)),
            "boxes": len(self.detections),
            **counts,
        }


def generate(n_frames: int = N_FRAMES, seed: int = SEED) -> VideoWorld:
    rng = np.random.default_rng(seed)
    truth = simulate(n_frames, rng)
    plans, errors = inject(truth, rng)
    pixels = encode(plans, rng)
    return VideoWorld(pixels, truth, detect(pixels), errors)


# -- install (asyncpg, like the rest of the demo) ---------------------------------------------------


async def install_video_demo(conn, models_dir: Path, world: VideoWorld | None = None) -> dict[str, int]:
    """Create (idempotently) ``frames``, ``demo_injected_errors``, ``detect_objects`` and the views
    through an asyncpg connection; returns the rows each table holds. Assertions are not created
    here (see :func:`create_assertions`)."""
    path = Path(models_dir) / DETECTOR_FILE
    if not path.is_file():
        detector_model(path)
    await conn.execute(FRAMES_TABLE)
    await conn.execute(ERRORS_TABLE)
    async with conn.transaction():
        await conn.execute("LOCK TABLE frames, demo_injected_errors IN SHARE ROW EXCLUSIVE MODE")
        if await conn.fetchval("SELECT count(*) FROM frames") == 0:
            world = world or await asyncio.to_thread(generate)  # keeps the server's loop free
            rows = [(t, px.tolist()) for t, px in enumerate(world.pixels)]
            await conn.copy_records_to_table("frames", records=rows, columns=("frame", "pixels"))
            errors = [(e.frame, e.box_id, e.kind) for e in world.errors]
            await conn.execute("TRUNCATE demo_injected_errors")
            await conn.copy_records_to_table("demo_injected_errors", records=errors)
            log.info("video demo: %s", world.figures())
    await conn.execute(DETECTOR_FUNCTION)
    for _, ddl in VIEWS:
        await conn.execute(ddl)
    return {
        table: await conn.fetchval(f"SELECT count(*) FROM {table}")
        for table in ("frames", "demo_injected_errors")
    }


async def create_assertions(conn) -> list[str]:
    """Create the demo's assertions that do not exist yet; returns the names created. A server
    without CREATE ASSERTION (or one refusing an assertion) is logged and skipped: the demo's
    tables and views stay usable without them."""
    created = []
    for name, ddl in ASSERTIONS.items():
        try:
            await conn.execute(ddl)
        except asyncpg.DuplicateObjectError:
            continue  # installed by an earlier run: left as it is
        except asyncpg.PostgresError as exc:
            log.info("assertion %s not created (%s: %s)", name, exc.sqlstate, exc)
            continue
        created.append(name)
    return created
