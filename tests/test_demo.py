"""``sievedb serve --demo``: the first-time user's data, models and model functions, end to end."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest

from server.demo import BANNER_TITLE, install_demo
from tests.support.servers import REPO, SHARED_DATA, SieveProcess

REVIEWS_CSV = SHARED_DATA / "amazon_reviews.csv"
DEMO_WAIT_S = 120


@dataclass
class Demo:
    server: SieveProcess
    models_dir: Path
    banner: str

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(), autocommit=True)


def wait_for_banner(server: SieveProcess, offset: int, timeout: float = DEMO_WAIT_S) -> str:
    """The log from ``offset`` once the demo banner is in it; fails fast when the demo failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = server.log()[offset:]
        if BANNER_TITLE in text:
            time.sleep(0.2)  # the rest of the multi-line banner
            return server.log()[offset:]
        if "demo setup failed" in text:
            pytest.fail(f"the demo failed:\n{text}")
        if server.proc.poll() is not None:
            pytest.fail(f"sievedb exited {server.proc.returncode}:\n{text}")
        time.sleep(0.1)
    pytest.fail(f"no demo banner within {timeout}s:\n{server.log()[offset:]}")


def start_demo_server(server: SieveProcess) -> str:
    offset = len(server.log())
    server.start()
    return wait_for_banner(server, offset)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("demo")
    models_dir = root / "models"
    server = SieveProcess(
        data_dir=root / "data",
        extra_args=["--demo", "--models-dir", str(models_dir), "--inference-workers", "1"],
    )
    try:
        banner = start_demo_server(server)
        yield Demo(server, models_dir, banner)
    finally:
        server.stop()


def direct_run(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def test_banner_tells_how_to_connect_and_what_to_run(demo):
    assert f"-p {demo.server.port} -U postgres postgres" in demo.banner
    assert "/psql -h" in demo.banner  # the PostgreSQL 18 psql, not whatever is on PATH
    assert "digit_oracle(pixels)" in demo.banner and "LATERAL digit_scores" in demo.banner
    assert "FROM digit_predictions" in demo.banner


def test_the_predictions_view(demo):
    """Early in the module, before other tests cache these rows' outputs."""
    with demo.connect() as conn:
        rows = conn.execute(
            "select id, true_label, digit, p7 from digit_predictions where id < 50 order by id"
        ).fetchall()
        calls = conn.execute(
            "select model_calls from sieve.query_log where query like '%digit_predictions where id < 50%' "
            "order by query_id desc limit 1"
        ).fetchone()[0]
    assert calls == {"digit_oracle": 50, "digit_proxy_p7": 50}
    assert [r[0] for r in rows] == list(range(50))
    assert sum(r[1] == r[2] for r in rows) >= 45
    assert all(0 <= r[3] <= 1 for r in rows)


def test_digits_are_loaded(demo):
    with demo.connect() as conn:
        assert conn.execute("select count(*) from digits").fetchone() == (1797,)
        row = conn.execute("select pixels, image, label from digits where id = 0").fetchone()
    pixels, image, label = row
    assert len(pixels) == 64 and min(pixels) >= 0.0 and max(pixels) <= 1.0
    assert bytes(image[:8]) == b"\x89PNG\r\n\x1a\n"
    assert label == 0


def test_digit_oracle_is_accurate_and_matches_onnxruntime(demo):
    with demo.connect() as conn:
        rows = conn.execute(
            "select id, digit_oracle(pixels), label, pixels from digits where id < 100 order by id"
        ).fetchall()
    assert [r[0] for r in rows] == list(range(100))
    agree = sum(r[1] == r[2] for r in rows)
    assert agree >= 90
    x = np.array([r[3] for r in rows], dtype=np.float32)
    expected = direct_run(demo.models_dir / "digits_mlp.onnx", {"X": x})["label"]
    assert [r[1] for r in rows] == expected.tolist()


def test_digit_proxy_is_a_probability(demo):
    with demo.connect() as conn:
        rows = conn.execute(
            "select id, label, digit_proxy_p7(pixels) from digits where id < 200 order by id"
        ).fetchall()
    scores = np.array([r[2] for r in rows])
    labels = np.array([r[1] for r in rows])
    assert len(rows) == 200 and ((scores >= 0) & (scores <= 1)).all()
    # a useful proxy: sevens score higher than the rest
    assert scores[labels == 7].mean() > 0.5 > scores[labels != 7].mean()


def test_digit_scores_through_lateral(demo):
    with demo.connect() as conn:
        rows = conn.execute(
            "select d.id, s.digit, s.confidence, d.pixels from digits d, "
            "lateral digit_scores(d.pixels) s where d.id between 100 and 139 order by d.id"
        ).fetchall()
    assert [r[0] for r in rows] == list(range(100, 140))
    out = direct_run(demo.models_dir / "digits_mlp.onnx", {"X": np.array([r[3] for r in rows], np.float32)})
    assert [r[1] for r in rows] == out["label"].tolist()
    np.testing.assert_allclose([r[2] for r in rows], out["probabilities"].max(axis=1), rtol=1e-5)


def test_catalog_lists_the_demo_models(demo):
    with demo.connect() as conn:
        models = dict(conn.execute("select name, version from sieve.models").fetchall())
    assert {"digit_oracle", "digit_proxy_p7", "digit_scores"} <= set(models)
    assert all(models[m] == 1 for m in ("digit_oracle", "digit_proxy_p7", "digit_scores"))


@pytest.mark.skipif(not REVIEWS_CSV.exists(), reason="../shared/data/amazon_reviews.csv is absent")
def test_reviews_and_sentiment_models(demo):
    assert "is_negative(review)" in demo.banner
    with demo.connect() as conn:
        assert conn.execute("select count(*) from reviews").fetchone() == (6000,)
        rows = conn.execute(
            "select review_id, rating, is_negative(review), negative_proxy(review), review from reviews "
            "where review_id < 200 order by review_id"
        ).fetchall()
        views = {r[0] for r in conn.execute("select viewname from pg_views where schemaname = 'public'")}
    assert len(rows) == 200 and {"review_sentiment", "digit_predictions"} <= views
    texts = np.array([[r[4]] for r in rows], dtype=object)
    expected = direct_run(demo.models_dir / "reviews_one_star.onnx", {"text": texts})["label"]
    assert [r[2] for r in rows] == expected.tolist()
    assert all(0 <= r[3] <= 1 for r in rows)
    # the model finds the 1-star reviews it was trained on
    one_star = [r for r in rows if r[1] == 1]
    assert one_star and sum(r[2] for r in one_star) >= 0.8 * len(one_star)


def test_install_demo_as_a_library_without_reviews_data(demo):
    """install_demo is an ordinary client; run again over a loaded server it changes nothing."""
    summary = asyncio.run(install_demo(demo.server.dsn(), demo.models_dir, shared_data=None))
    assert summary.tables == {"digits": 1797} and summary.loaded == {"digits": 0}
    assert summary.trained == [] and not summary.reviews_loaded
    assert summary.functions == {"digit_oracle": 1, "digit_proxy_p7": 1, "digit_scores": 1}
    assert summary.views == ["digit_predictions"]
    assert not any("reviews" in q for q in summary.examples)
    assert any("digit_oracle" in q for q in summary.examples)


def test_demo_subcommand_installs_into_a_running_server(demo):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "demo",
            "--dsn",
            demo.server.dsn(),
            "--models-dir",
            str(demo.models_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert BANNER_TITLE in out.stderr and "trained=none" in out.stderr


def test_restarting_with_demo_changes_nothing(demo):
    """Last in this module: restarts the shared server. One model file is deleted first: it is
    retrained byte for byte, so its version stays 1 and its cached outputs stay valid."""

    def snapshot():
        with demo.connect() as conn:
            counts = conn.execute("select count(*), count(distinct id) from digits").fetchone()
            models = conn.execute("select name, version, content_hash from sieve.models order by name")
            views = conn.execute("select viewname from pg_views where schemaname = 'public' order by 1")
            state = (counts, models.fetchall(), [v[0] for v in views.fetchall()])
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in demo.models_dir.glob("*.onnx")}
        return state, files

    before = snapshot()
    untouched = demo.models_dir / "digits_mlp.onnx"
    mtime = untouched.stat().st_mtime_ns
    (demo.models_dir / "digits_logreg.onnx").unlink()
    assert demo.server.stop() == 0
    banner = start_demo_server(demo.server)
    assert "digits_mlp.onnx present: not retrained" in banner and "already holds 1797 rows" in banner
    assert "trained=['digits_logreg.onnx']" in banner
    assert snapshot() == before
    assert before[0][0] == (1797, 1797)
    assert {v for _, v, _ in before[0][1]} == {1}
    assert untouched.stat().st_mtime_ns == mtime
    with demo.connect() as conn:
        conn.execute("select id, digit_oracle(pixels), digit_proxy_p7(pixels) from digits where id < 10")
        calls = conn.execute(
            "select model_calls from sieve.query_log order by query_id desc limit 1"
        ).fetchone()[0]
    assert calls == {"digit_oracle": 0, "digit_proxy_p7": 0}  # outputs cached before the restart hold
