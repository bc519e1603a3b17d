"""The model-assertions demo (issue 12, item 4): a synthetic street video whose detector makes
injected, recorded mistakes, and the assertions of the issue finding them through SQL.

Scoring (see tests/support/assertion_video.py): the true-positive rate of an assertion is the
share of its kind's injected errors it flags, its precision the share of its flags that are
errors of its kind. Targets: TPR >= 0.88 (the paper's lowest) for flicker, multibox and phantom
over one 2,000-frame world with 40-60 injected errors of each kind.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import psycopg
import pytest

from server.demo_video import ASSERTION_QUERIES, ASSERTIONS, KINDS, VideoWorld, detector_model, generate
from tests.support import assertion_video as av
from tests.support.model_files import direct_run
from tests.support.servers import SieveProcess

log = logging.getLogger(__name__)

TPR_TARGET = 0.88
NOT_BUILT = "CREATE ASSERTION not built yet"


@dataclass
class Demo:
    server: SieveProcess
    world: VideoWorld

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(), autocommit=True, prepare_threshold=None)


@pytest.fixture(scope="module")
def world() -> VideoWorld:
    return generate()


@pytest.fixture(scope="module")
def demo(world: VideoWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    models_dir = tmp_path_factory.mktemp("assertion-video-models")
    server = SieveProcess(
        data_dir=tmp_path_factory.mktemp("assertion-video-server") / "data",
        extra_args=["--models-dir", str(models_dir), "--inference-workers", "1"],
    ).start()
    try:
        av.install(server.dsn(), models_dir, world)
        yield Demo(server, world)
    finally:
        server.stop()


# -- the world ----------------------------------------------------------------------------------


def test_the_world_has_enough_of_every_mistake_to_score(world: VideoWorld) -> None:
    figures = world.figures()
    log.info("assertion video world: %s", figures)
    assert figures["frames"] == 2000
    assert figures["boxes"] > 5 * figures["frames"]
    for kind in KINDS:
        assert 30 <= figures[kind] <= 80, (kind, figures)


def test_the_same_seed_gives_the_same_world(world: VideoWorld) -> None:
    again = generate()
    assert np.array_equal(again.pixels, world.pixels)
    assert again.errors == world.errors
    assert generate(seed=13).errors != world.errors


def test_the_onnx_detector_answers_what_the_reference_computes(world: VideoWorld, tmp_path) -> None:
    out = direct_run(detector_model(tmp_path / "detector.onnx"), {"pixels": world.pixels})
    assert out["row"].tolist() == [d.frame for d in world.detections]
    assert out["box_id"].tolist() == [d.box_id for d in world.detections]
    assert [str(s) for s in out["label"]] == [d.label for d in world.detections]
    expected = np.array([(d.x_min, d.y_min, d.x_max, d.y_max, d.score) for d in world.detections], np.float32)
    got = np.stack([out[c] for c in ("x_min", "y_min", "x_max", "y_max", "score")], axis=1)
    assert np.array_equal(got, expected)


def test_each_injected_error_names_a_box_the_detector_reports_or_a_frame_it_blanked(
    world: VideoWorld,
) -> None:
    boxes = {(d.frame, d.box_id) for d in world.detections}
    frames = {d.frame for d in world.detections}
    for e in world.errors:
        if e.kind == "flicker":
            assert e.box_id is None and e.frame not in frames, e
            assert any(b.label == "car" for b in world.truth[e.frame]), e
        else:
            assert (e.frame, e.box_id) in boxes, e


@pytest.mark.parametrize("assertion", ["flicker", "multibox", "phantom"])
def test_the_reference_answer_of_each_assertion_meets_the_target(world: VideoWorld, assertion: str) -> None:
    """The world is scoreable: computed here, each assertion finds its injected errors."""
    s = av.score(av.expected_flags(world, assertion), av.injected(world, assertion))
    log.info("%s reference: TPR %.3f precision %.3f (%s)", assertion, s.tpr, s.precision, s)
    assert s.tpr >= TPR_TARGET
    assert s.precision >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("assertion", ["flicker", "multibox", "phantom"])
def test_the_target_holds_in_every_world_of_twenty_seeds(assertion: str) -> None:
    """Not one lucky world: over 20 seeded worlds (40-60 injected errors each) every world meets
    the target (measured over 30 seeds: lowest TPR 0.976 flicker, 0.907 multibox, 0.958 phantom;
    with multibox's mean miss rate of 2.2%, a world of 48 errors misses the target with chance
    ~0.1%)."""
    scores = []
    for seed in range(100, 120):
        world = generate(seed=seed)
        scores.append(av.score(av.expected_flags(world, assertion), av.injected(world, assertion)))
    tprs = [s.tpr for s in scores]
    log.info("%s over 20 worlds: TPR min %.3f mean %.3f", assertion, min(tprs), float(np.mean(tprs)))
    assert min(tprs) >= TPR_TARGET


# -- through SQL --------------------------------------------------------------------------------


def test_detections_and_car_counts_answer_what_the_detector_gives(demo: Demo) -> None:
    with demo.connect() as conn:
        rows = conn.execute(
            "SELECT frame, box_id, label, x_min, y_min, x_max, y_max FROM detections ORDER BY frame, box_id"
        ).fetchall()
        counts = dict(conn.execute("SELECT frame, n FROM car_counts").fetchall())
        errors = conn.execute("SELECT frame, box_id, kind FROM demo_injected_errors").fetchall()
    expected = [
        (d.frame, d.box_id, d.label, d.x_min, d.y_min, d.x_max, d.y_max) for d in demo.world.detections
    ]
    assert [(f, b, lab) for f, b, lab, *_ in rows] == [e[:3] for e in expected]
    assert np.allclose(np.array([r[3:] for r in rows]), np.array([e[3:] for e in expected]))
    cars = np.bincount([d.frame for d in demo.world.detections if d.label == "car"], minlength=2000)
    assert counts == {t: int(n) for t, n in enumerate(cars)}
    assert sorted(errors, key=str) == sorted(
        ((e.frame, e.box_id, e.kind) for e in demo.world.errors), key=str
    )


@pytest.mark.parametrize("assertion", ["flicker", "multibox", "phantom"])
def test_each_assertion_query_flags_what_the_reference_flags(demo: Demo, assertion: str) -> None:
    """The assertion's SQL as a plain query: the same flags as the reference, so its TPR too."""
    with demo.connect() as conn:
        rows = conn.execute(ASSERTION_QUERIES[assertion]).fetchall()
    flagged = [tuple(int(v) for v in r[:-1]) for r in rows]
    assert len(flagged) == len(set(flagged))
    assert set(flagged) == av.expected_flags(demo.world, assertion)
    assert all(r[-1] > 0 for r in rows)
    s = av.score(flagged, av.injected(demo.world, assertion))
    log.info("%s as a query: TPR %.3f precision %.3f (%s)", assertion, s.tpr, s.precision, s)
    assert s.tpr >= TPR_TARGET


# -- through CREATE ASSERTION (xfail until the DDL exists) ------------------------------------------


def _create(conn: psycopg.Connection, assertion: str) -> None:
    try:
        conn.execute(ASSERTIONS[assertion])
    except psycopg.errors.SyntaxError:
        pytest.xfail(NOT_BUILT)


def _violations(conn: psycopg.Connection, assertion: str) -> list[tuple[tuple, float]]:
    rows = conn.execute(
        "SELECT key, severity FROM sieve.violations WHERE assertion = %s ORDER BY severity DESC", (assertion,)
    ).fetchall()
    return [(av.key_of(assertion, key), float(severity)) for key, severity in rows]


def _check(conn: psycopg.Connection, assertion: str) -> list[tuple[tuple, float]]:
    _create(conn, assertion)
    try:
        # check_assertion takes a string literal only, not a bound parameter
        count = conn.execute(f"SELECT sieve.check_assertion('{assertion}')").fetchone()[0]
        found = _violations(conn, assertion)
    finally:
        conn.execute(f"DROP ASSERTION {assertion}")
    assert count == len(found)
    assert all(severity > 0 for _, severity in found)
    return found


@pytest.mark.parametrize("assertion", ["flicker", "multibox", "phantom"])
def test_each_consistency_assertion_finds_its_injected_errors(demo: Demo, assertion: str) -> None:
    with demo.connect() as conn:
        found = _check(conn, assertion)
    s = av.score([key for key, _ in found], av.injected(demo.world, assertion))
    log.info("%s through CREATE ASSERTION: TPR %.3f precision %.3f (%s)", assertion, s.tpr, s.precision, s)
    assert {key for key, _ in found} == av.expected_flags(demo.world, assertion)
    assert s.tpr >= TPR_TARGET


def test_the_learned_assertion_ranks_wrong_sizes_high(demo: Demo) -> None:
    """odd_boxes ranks boxes by the unlikelihood of (area, aspect) per label; boxes clipped at the
    frame's edges are naturally odd too, so the floor is recall at k = 2n (n injected wrong sizes)
    >= 0.6, where a random ranking finds 2n / boxes (under 1%)."""
    with demo.connect() as conn:
        found = _check(conn, "odd_boxes")
    truth = av.injected(demo.world, "odd_boxes")
    k = 2 * len(truth)
    recall = av.recall_at([key for key, _ in found], truth, k)
    chance = k / len(demo.world.detections)
    log.info(
        "odd_boxes: recall at %d = %.3f (a random ranking: %.3f); %d flagged", k, recall, chance, len(found)
    )
    assert recall >= 0.6
