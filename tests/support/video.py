"""A synthetic video-analytics world: frames, real ONNX models over them, views, and the same
model outputs computed in the test process and loaded into plain tables.

Everything is generated from a seed (no downloads). Each frame's ``pixels`` is a real[16] that
encodes what the "detector" will find:

* floats ``5j .. 5j+4`` (slot ``j`` = 0, 1, 2): score, label code, x_min, y_min, size. A slot
  whose score is over 0.5 is a detected object; the others are background.
* float 15: the traffic light's code (0 red, 1 yellow, 2 green) plus a fraction unique to the
  frame, so that no two frames share an input (and an input's digest names one frame).

Models (``onnx.helper`` graphs, run by ONNX Runtime inside SieveDB):

* ``detect(pixels real[])``: several rows per frame (0 to 3), one per object, through a
  row-index first output (``'{"rows": "row_index"}'``);
* ``color(box real[])``: a colour for each object, from ``ARRAY[x_min, y_min, x_max, y_max]``;
* ``vehicle_count(pixels real[])``: the frame's cars, buses and trucks (int);
* ``traffic_light(pixels real[])``: the frame's light (text).

Views, as users would write them: ``objects`` (frames x detect), ``colors`` (objects x color,
a chain of two models) and ``frame_stats`` (two per-frame model columns). ``plain_objects``,
``plain_colors`` and ``plain_frame_stats`` hold the same rows, computed here with a bare ONNX
Runtime session, so that any query can be checked against the same SQL over plain tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
from onnx import TensorProto, helper, numpy_helper

from tests.inference.models import OPSET, save
from tests.support.model_files import cache_table, direct_run

FEATURES = 16
SLOTS = 3
LABELS = ("car", "person", "bus", "truck")
COLORS = ("red", "white", "black", "blue")
LIGHTS = ("red", "yellow", "green")
MODELS = ("detect", "color", "vehicle_count", "traffic_light")
START = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)

DETECTOR_FILE = "video_detector.onnx"
COLOR_FILE = "video_color.onnx"
COUNT_FILE = "video_vehicle_count.onnx"
LIGHT_FILE = "video_traffic_light.onnx"

FUNCTIONS = (
    "CREATE FUNCTION detect(pixels real[]) RETURNS TABLE (box int, label text, x_min real, y_min real, "
    f'x_max real, y_max real, score real) LANGUAGE onnx AS \'{DETECTOR_FILE}\', \'{{"rows": "row_index", "max_rows": 3}}\'',  # noqa: E501
    f"CREATE FUNCTION color(box real[]) RETURNS text LANGUAGE onnx AS '{COLOR_FILE}'",
    f"CREATE FUNCTION vehicle_count(pixels real[]) RETURNS int LANGUAGE onnx AS '{COUNT_FILE}'",
    f"CREATE FUNCTION traffic_light(pixels real[]) RETURNS text LANGUAGE onnx AS '{LIGHT_FILE}'",
)

VIEWS = (
    "CREATE VIEW objects AS SELECT f.frame, f.camera, d.box, d.label, d.x_min, d.y_min, d.x_max, "
    "d.y_max, d.score FROM frames f, LATERAL detect(f.pixels) d",
    "CREATE VIEW colors AS SELECT o.frame, o.camera, o.box, o.label, "
    "color(ARRAY[o.x_min, o.y_min, o.x_max, o.y_max]) AS color FROM objects o",
    "CREATE VIEW frame_stats AS SELECT f.frame, f.camera, vehicle_count(f.pixels) AS vehicles, "
    "traffic_light(f.pixels) AS light FROM frames f",
)

PLAIN_TABLES = (
    "CREATE TABLE plain_objects (frame int, camera int, box int, label text, x_min real, y_min real, "
    "x_max real, y_max real, score real, PRIMARY KEY (frame, box))",
    "CREATE TABLE plain_colors (frame int, camera int, box int, label text, color text, "
    "PRIMARY KEY (frame, box))",
    "CREATE TABLE plain_frame_stats (frame int PRIMARY KEY, camera int, vehicles int, light text)",
)


# -- models -------------------------------------------------------------------------------------


def _const(name: str, value) -> helper.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def _strings(name: str, values: Iterable[str]):
    return numpy_helper.from_array(np.array(list(values), dtype=object), name)


def _save(nodes, name: str, inputs, outputs, inits, path: Path) -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def detector_model(path: Path) -> Path:
    """pixels [N, 16] -> one row per slot whose score is over 0.5.

    Outputs: ``row`` [M] (the input row: the row-index column), ``box`` [M] (the object's rank
    among its frame's objects, 0..k-1), ``label`` [M] string, ``x_min``, ``y_min``, ``x_max``,
    ``y_max``, ``score`` [M] float."""
    nodes = [
        _const("starts", np.array([0], dtype=np.int64)),
        _const("ends", np.array([SLOTS * 5], dtype=np.int64)),
        _const("axes1", np.array([1], dtype=np.int64)),
        _const("slot_shape", np.array([0, SLOTS, 5], dtype=np.int64)),
        _const("half", np.array(0.5, dtype=np.float32)),
        _const("one", np.array(1, dtype=np.int64)),
        _const("i0", np.array(0, dtype=np.int64)),
        _const("i1", np.array(1, dtype=np.int64)),
        _const("i2", np.array(2, dtype=np.int64)),
        _const("i3", np.array(3, dtype=np.int64)),
        _const("i4", np.array(4, dtype=np.int64)),
        _const("three_quarters", np.array(0.75, dtype=np.float32)),
        helper.make_node("Slice", ["pixels", "starts", "ends", "axes1"], ["flat"]),
        helper.make_node("Reshape", ["flat", "slot_shape"], ["slots"]),
        helper.make_node("Gather", ["slots", "i0"], ["scores"], axis=2),
        helper.make_node("Greater", ["scores", "half"], ["present"]),
        helper.make_node("NonZero", ["present"], ["nz"]),
        helper.make_node("Transpose", ["nz"], ["where"], perm=[1, 0]),
        helper.make_node("Gather", ["nz", "i0"], ["row"], axis=0),
        helper.make_node("GatherND", ["slots", "where"], ["picked"]),
        helper.make_node("Cast", ["present"], ["present_i"], to=TensorProto.INT64),
        helper.make_node("CumSum", ["present_i", "one"], ["rank1"]),
        helper.make_node("Sub", ["rank1", "one"], ["rank"]),
        helper.make_node("GatherND", ["rank", "where"], ["box"]),
        helper.make_node("Gather", ["picked", "i0"], ["score"], axis=1),
        helper.make_node("Gather", ["picked", "i1"], ["label_code"], axis=1),
        helper.make_node("Cast", ["label_code"], ["label_index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["label_names", "label_index"], ["label"], axis=0),
        helper.make_node("Gather", ["picked", "i2"], ["x_min"], axis=1),
        helper.make_node("Gather", ["picked", "i3"], ["y_min"], axis=1),
        helper.make_node("Gather", ["picked", "i4"], ["size"], axis=1),
        helper.make_node("Add", ["x_min", "size"], ["x_max"]),
        helper.make_node("Mul", ["size", "three_quarters"], ["height"]),
        helper.make_node("Add", ["y_min", "height"], ["y_max"]),
    ]
    floats = ("x_min", "y_min", "x_max", "y_max", "score")
    outputs = [
        helper.make_tensor_value_info("row", TensorProto.INT64, ["M"]),
        helper.make_tensor_value_info("box", TensorProto.INT64, ["M"]),
        helper.make_tensor_value_info("label", TensorProto.STRING, ["M"]),
        *(helper.make_tensor_value_info(n, TensorProto.FLOAT, ["M"]) for n in floats),
    ]
    inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", FEATURES])]
    return _save(nodes, "video_detector", inputs, outputs, [_strings("label_names", LABELS)], path)


def color_model(path: Path) -> Path:
    """box [N, 4] (x_min, y_min, x_max, y_max) -> colour [N]: COLORS[floor(4 (x_min + y_min)) % 4]."""
    nodes = [
        _const("i0", np.array(0, dtype=np.int64)),
        _const("i1", np.array(1, dtype=np.int64)),
        _const("four_f", np.array(4.0, dtype=np.float32)),
        _const("four", np.array(4, dtype=np.int64)),
        helper.make_node("Gather", ["box", "i0"], ["x"], axis=1),
        helper.make_node("Gather", ["box", "i1"], ["y"], axis=1),
        helper.make_node("Add", ["x", "y"], ["xy"]),
        helper.make_node("Mul", ["xy", "four_f"], ["scaled"]),
        helper.make_node("Floor", ["scaled"], ["floored"]),
        helper.make_node("Cast", ["floored"], ["code"], to=TensorProto.INT64),
        helper.make_node("Mod", ["code", "four"], ["index"]),
        helper.make_node("Gather", ["color_names", "index"], ["color"], axis=0),
    ]
    return _save(
        nodes,
        "video_color",
        [helper.make_tensor_value_info("box", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("color", TensorProto.STRING, ["N"])],
        [_strings("color_names", COLORS)],
        path,
    )


def vehicle_count_model(path: Path) -> Path:
    """pixels [N, 16] -> the number of detected objects that are not people [N] int64."""
    nodes = [
        _const("score_at", np.array([5 * j for j in range(SLOTS)], dtype=np.int64)),
        _const("label_at", np.array([5 * j + 1 for j in range(SLOTS)], dtype=np.int64)),
        _const("half", np.array(0.5, dtype=np.float32)),
        _const("person", np.array(float(LABELS.index("person")), dtype=np.float32)),
        _const("axes1", np.array([1], dtype=np.int64)),
        helper.make_node("Gather", ["pixels", "score_at"], ["scores"], axis=1),
        helper.make_node("Gather", ["pixels", "label_at"], ["labels"], axis=1),
        helper.make_node("Greater", ["scores", "half"], ["present"]),
        helper.make_node("Equal", ["labels", "person"], ["is_person"]),
        helper.make_node("Not", ["is_person"], ["not_person"]),
        helper.make_node("And", ["present", "not_person"], ["vehicle"]),
        helper.make_node("Cast", ["vehicle"], ["vehicle_i"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["vehicle_i", "axes1"], ["vehicles"], keepdims=0),
    ]
    return _save(
        nodes,
        "video_vehicle_count",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("vehicles", TensorProto.INT64, ["N"])],
        [],
        path,
    )


def traffic_light_model(path: Path) -> Path:
    """pixels [N, 16] -> LIGHTS[floor(pixels[:, 15])] [N] string."""
    nodes = [
        _const("at", np.array(FEATURES - 1, dtype=np.int64)),
        helper.make_node("Gather", ["pixels", "at"], ["code_f"], axis=1),
        helper.make_node("Floor", ["code_f"], ["floored"]),
        helper.make_node("Cast", ["floored"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["light_names", "index"], ["light"], axis=0),
    ]
    return _save(
        nodes,
        "video_traffic_light",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("light", TensorProto.STRING, ["N"])],
        [_strings("light_names", LIGHTS)],
        path,
    )


# -- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    frame: int
    camera: int
    ts: datetime
    pixels: np.ndarray  # float32 [16]

    @property
    def key(self) -> bytes:
        """The model input's identity (same bytes, same digest in SieveDB)."""
        return self.pixels.tobytes()


@dataclass(frozen=True)
class Obj:
    """One detected object, as the reference ONNX Runtime run found it."""

    frame: int
    camera: int
    box: int
    label: str
    x_min: float
    y_min: float
    x_max: float
    y_max: float
    score: float
    color: str

    @property
    def key(self) -> tuple[float, float, float, float]:
        """The colour model's input (``ARRAY[x_min, y_min, x_max, y_max]``)."""
        return (self.x_min, self.y_min, self.x_max, self.y_max)


@dataclass(frozen=True)
class Stats:
    frame: int
    camera: int
    vehicles: int
    light: str


def generate_frames(n_frames: int, seed: int) -> list[Frame]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_frames):
        px = np.zeros(FEATURES, dtype=np.float32)
        k = int(rng.choice(4, p=[0.25, 0.35, 0.25, 0.15]))
        slots = set(rng.choice(SLOTS, size=k, replace=False).tolist())
        for j in range(SLOTS):
            score = rng.uniform(0.55, 0.99) if j in slots else rng.uniform(0.0, 0.45)
            px[5 * j : 5 * j + 5] = (
                score,
                rng.integers(len(LABELS)),
                rng.uniform(0.0, 0.8),
                rng.uniform(0.0, 0.8),
                rng.uniform(0.05, 0.2),
            )
        light = int(rng.choice(len(LIGHTS), p=[0.4, 0.15, 0.45]))
        px[FEATURES - 1] = light + (i + 1) / 4096  # exact in float32; floor() is the light
        frames.append(Frame(i, int(rng.integers(1, 5)), START + timedelta(seconds=i), px))
    return frames


@dataclass
class VideoWorld:
    """The frames, the model files, and every model output computed in the test process."""

    frames: list[Frame]
    objects: list[Obj]
    stats: list[Stats]
    paths: dict[str, Path]

    # -- what queries may reach ---------------------------------------------------------------

    def frame_ids(self, keep: Callable[[Frame], bool] = lambda f: True) -> set[int]:
        return {f.frame for f in self.frames if keep(f)}

    def frame(self, frame: int) -> Frame:
        return self.frames[frame]

    def objects_of(self, frames: Iterable[int], keep: Callable[[Obj], bool] = lambda o: True) -> list[Obj]:
        wanted = set(frames)
        return [o for o in self.objects if o.frame in wanted and keep(o)]

    def stats_of(self, frame: int) -> Stats:
        return self.stats[frame]

    def frame_inputs(self, frames: Iterable[int]) -> int:
        """Distinct per-frame model inputs (pixels) of these frames."""
        return len({self.frames[i].key for i in set(frames)})

    @staticmethod
    def box_inputs(objects: Iterable[Obj]) -> int:
        """Distinct colour-model inputs of these objects."""
        return len({o.key for o in objects})


def build_world(models_dir: Path, n_frames: int = 1000, seed: int = 2060) -> VideoWorld:
    """Write the four models into ``models_dir``, generate frames and run the models here."""
    paths = {
        "detect": detector_model(models_dir / DETECTOR_FILE),
        "color": color_model(models_dir / COLOR_FILE),
        "vehicle_count": vehicle_count_model(models_dir / COUNT_FILE),
        "traffic_light": traffic_light_model(models_dir / LIGHT_FILE),
    }
    frames = generate_frames(n_frames, seed)
    pixels = np.stack([f.pixels for f in frames])
    det = direct_run(paths["detect"], {"pixels": pixels})
    boxes = np.stack([det["x_min"], det["y_min"], det["x_max"], det["y_max"]], axis=1).astype(np.float32)
    colors = direct_run(paths["color"], {"box": boxes})["color"] if len(boxes) else []
    objects = [
        Obj(
            frame=int(det["row"][m]),
            camera=frames[int(det["row"][m])].camera,
            box=int(det["box"][m]),
            label=str(det["label"][m]),
            x_min=float(det["x_min"][m]),
            y_min=float(det["y_min"][m]),
            x_max=float(det["x_max"][m]),
            y_max=float(det["y_max"][m]),
            score=float(det["score"][m]),
            color=str(colors[m]),
        )
        for m in range(len(det["row"]))
    ]
    _check_detector(frames, objects)
    vehicles = direct_run(paths["vehicle_count"], {"pixels": pixels})["vehicles"]
    lights = direct_run(paths["traffic_light"], {"pixels": pixels})["light"]
    stats = [
        Stats(f.frame, f.camera, int(v), str(light))
        for f, v, light in zip(frames, vehicles, lights, strict=True)
    ]
    return VideoWorld(frames, objects, stats, paths)


def _check_detector(frames: list[Frame], objects: list[Obj]) -> None:
    """The reference run finds exactly the objects the generator put in (the graph is right)."""
    found: dict[int, list[Obj]] = {}
    for o in objects:
        found.setdefault(o.frame, []).append(o)
    for f in frames:
        present = [j for j in range(SLOTS) if f.pixels[5 * j] > 0.5]
        got = found.get(f.frame, [])
        assert [o.box for o in got] == list(range(len(present))), (f.frame, got)
        assert [o.label for o in got] == [LABELS[int(f.pixels[5 * j + 1])] for j in present]


# -- the schema in a database -------------------------------------------------------------------


def install(conn: psycopg.Connection, world: VideoWorld) -> None:
    """Create ``frames``, the model functions, the views and the plain tables (autocommit)."""
    conn.execute(
        "CREATE TABLE frames (frame int PRIMARY KEY, camera int NOT NULL, ts timestamptz, pixels real[])"
    )
    with conn.cursor().copy("COPY frames (frame, camera, ts, pixels) FROM STDIN") as copy:
        for f in world.frames:
            copy.write_row((f.frame, f.camera, f.ts, [float(v) for v in f.pixels]))
    for sql in (*FUNCTIONS, *VIEWS, *PLAIN_TABLES):
        conn.execute(sql)
    with conn.cursor().copy("COPY plain_objects FROM STDIN") as copy:
        for o in world.objects:
            copy.write_row((o.frame, o.camera, o.box, o.label, o.x_min, o.y_min, o.x_max, o.y_max, o.score))
    with conn.cursor().copy("COPY plain_colors FROM STDIN") as copy:
        for o in world.objects:
            copy.write_row((o.frame, o.camera, o.box, o.label, o.color))
    with conn.cursor().copy("COPY plain_frame_stats FROM STDIN") as copy:
        for s in world.stats:
            copy.write_row((s.frame, s.camera, s.vehicles, s.light))
    conn.execute("ANALYZE frames, plain_objects, plain_colors, plain_frame_stats")


def clear_caches(conn: psycopg.Connection) -> None:
    for model in MODELS:
        conn.execute("SELECT sieve.clear_cache(%s)", (model,))


def last_query_id(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT coalesce(max(query_id), 0) FROM sieve.query_log").fetchone()[0]


def logged_calls(conn: psycopg.Connection, after: int) -> dict[str, int]:
    """Model calls (cache hits excluded) that ``sieve.query_log`` recorded after query ``after``,
    summed per model; models with no call are left out."""
    rows = conn.execute(
        "SELECT model_calls FROM sieve.query_log WHERE query_id > %s ORDER BY query_id", (after,)
    ).fetchall()
    calls: dict[str, int] = {}
    for (model_calls,) in rows:
        for model, n in (model_calls or {}).items():
            if n:
                calls[model] = calls.get(model, 0) + int(n)
    return calls


def cached_inputs(conn: psycopg.Connection) -> dict[str, int]:
    """Distinct inputs each model's cache holds (after ``clear_caches``: the inputs that ran)."""
    counts = {}
    for model in MODELS:
        n = conn.execute(f"SELECT count(DISTINCT digest) FROM {cache_table(conn, model)}").fetchone()[0]
        if n:
            counts[model] = n
    return counts
