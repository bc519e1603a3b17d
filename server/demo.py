"""The first-time-user demo: real data, real models and model functions, installed through SieveDB.

``install_demo`` is an ordinary client of a running SieveDB server (asyncpg over the wire, like any
user's program). It is idempotent: tables are loaded only when empty, model files are trained only
when missing (deterministically), and ``CREATE OR REPLACE FUNCTION`` of an unchanged model keeps its
version, so running it on every ``sievedb serve --demo`` changes nothing after the first time.

What it sets up:

- ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (pixels in [0, 1], a PNG, the human label),
  the MLP ``digit_oracle``, the logistic-regression proxy ``digit_proxy_p7``, the table function
  ``digit_scores`` and the view ``digit_predictions``.
- ``reviews`` (only when ``../shared/data/amazon_reviews.csv`` exists): 6,000 real product reviews,
  the TF-IDF model ``is_negative`` (1-star reviews), its cheap proxy ``negative_proxy`` and the view
  ``review_sentiment``.

Training needs scikit-learn and skl2onnx and runs in a child process (``python -m server.demo
train``), data preparation in a thread: the demo can run inside the server's own event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib.util
import io
import json
import logging
import os
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import asyncpg

from server import demo_video

log = logging.getLogger("sievedb.demo")

_REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = _REPO.parent / "shared" / "data"
REVIEWS_CSV = "amazon_reviews.csv"
BANNER_TITLE = "SieveDB demo ready"

OPSET = 17
IR_VERSION = 8  # newer onnx writes IR versions older ONNX Runtime releases refuse to read
SEED = 0
_LOCK_KEY = 0x51E7ED  # pg_advisory_lock key: one demo install at a time per database

DIGITS_MLP = "digits_mlp.onnx"
DIGITS_LOGREG = "digits_logreg.onnx"
REVIEWS_MODEL = "reviews_one_star.onnx"
REVIEWS_PROXY = "reviews_proxy.onnx"

DIGITS_TABLE = """
CREATE TABLE IF NOT EXISTS digits (
    id int PRIMARY KEY,
    pixels real[],
    image bytea,
    label int
)"""

REVIEWS_TABLE = """
CREATE TABLE IF NOT EXISTS reviews (
    review_id int PRIMARY KEY,
    category text,
    rating int,
    review text
)"""


def _options(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(", ", ": "))


DIGIT_FUNCTIONS = [
    (
        "digit_oracle",
        "CREATE OR REPLACE FUNCTION digit_oracle(pixels real[]) RETURNS int LANGUAGE onnx "
        f"AS '{DIGITS_MLP}', '{_options({'output': 'label'})}'",
    ),
    (
        "digit_proxy_p7",
        "CREATE OR REPLACE FUNCTION digit_proxy_p7(pixels real[]) RETURNS real LANGUAGE onnx "
        f"AS '{DIGITS_LOGREG}', "
        f"'{_options({'output': {'output': 'probabilities', 'post': {'op': 'index', 'index': 7}}})}'",
    ),
    (
        "digit_scores",
        "CREATE OR REPLACE FUNCTION digit_scores(pixels real[]) "
        "RETURNS TABLE (digit bigint, confidence real) LANGUAGE onnx "
        f"AS '{DIGITS_MLP}', '"
        + _options({"outputs": {"digit": "label", "confidence": {"output": "probabilities", "post": "max"}}})
        + "'",
    ),
]

DIGIT_VIEW = (
    "digit_predictions",
    "CREATE OR REPLACE VIEW digit_predictions AS "
    "SELECT d.id, d.label AS true_label, digit_oracle(d.pixels) AS digit, "
    "digit_proxy_p7(d.pixels) AS p7 FROM digits d",
)

REVIEW_FUNCTIONS = [
    (
        "is_negative",
        "CREATE OR REPLACE FUNCTION is_negative(review text) RETURNS bigint LANGUAGE onnx "
        f"AS '{REVIEWS_MODEL}', '{_options({'output': 'label'})}'",
    ),
    (
        "negative_proxy",
        "CREATE OR REPLACE FUNCTION negative_proxy(review text) RETURNS real LANGUAGE onnx "
        f"AS '{REVIEWS_PROXY}', "
        f"'{_options({'output': {'output': 'probabilities', 'post': {'op': 'index', 'index': 1}}})}'",
    ),
]

REVIEW_VIEW = (
    "review_sentiment",
    "CREATE OR REPLACE VIEW review_sentiment AS "
    "SELECT r.review_id, r.category, r.rating, is_negative(r.review) AS negative, "
    "negative_proxy(r.review) AS p_negative FROM reviews r",
)

DIGIT_EXAMPLES = [
    "SELECT id, digit_oracle(pixels) AS digit FROM digits WHERE id < 20;",
    "SELECT count(*) FROM digits WHERE digit_oracle(pixels) = 7 AND id < 300;",
    "SELECT d.id, d.label, s.digit, s.confidence FROM digits d, LATERAL digit_scores(d.pixels) s "
    "WHERE d.id < 10;",
    "SELECT id, true_label, digit, p7 FROM digit_predictions WHERE id < 50;",
]

# People as the oracle (#13): the same digits, labelled in a browser on the web face's /label.
LABELS_FUNCTION = (
    "is_seven_by_eye",
    "CREATE OR REPLACE FUNCTION is_seven_by_eye(image bytea) RETURNS boolean LANGUAGE labels "
    f"AS 'Is this digit a seven?', '{_options({'choices': [True, False]})}'",
)
LABELS_EXAMPLES = [
    "SET sieve.seed = 7;",
    "SELECT id FROM digits WHERE is_seven_by_eye(image) RECALL TARGET 90% CONFIDENCE 95% BUDGET 40 "
    "USING PROXY digit_proxy_p7(pixels);  -- SV001 'labels pending': label them in the browser, run it again",
    "SELECT * FROM sieve.label_requests;",
]

REVIEW_EXAMPLES = [
    "SELECT review_id, rating, is_negative(review) AS negative, negative_proxy(review) AS p_negative "
    "FROM reviews WHERE review_id < 20;",
]


class DemoError(RuntimeError):
    """The demo could not be installed (missing packages, a conflicting table, ...)."""


@dataclass
class DemoSummary:
    tables: dict[str, int]  # table -> rows it holds now
    loaded: dict[str, int]  # table -> rows this run copied in (0 when it was already there)
    models: dict[str, Path]  # file name -> path
    trained: list[str]  # model files this run wrote
    functions: dict[str, int]  # model function -> version in sieve.models
    views: list[str]
    reviews_loaded: bool
    examples: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # LANGUAGE labels functions (people answer)
    links: dict[str, str] = field(default_factory=dict)  # what the web face serves -> its URL
    elapsed_s: float = 0.0
    video: dict[str, int] = field(default_factory=dict)  # the assertions demo's tables -> rows
    assertions: list[str] = field(default_factory=list)  # assertions this run created


# -- data and models (pure, run in a thread) ------------------------------------------------------


def _require_ml() -> None:
    missing = [m for m in ("sklearn", "skl2onnx", "PIL") if importlib.util.find_spec(m) is None]
    if missing:
        raise DemoError(
            f"the demo needs scikit-learn, skl2onnx and pillow ({', '.join(missing)} missing): "
            "pip install scikit-learn skl2onnx pillow"
        )


def _digits_arrays():
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


def _png(gray01) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(gray01.reshape(8, 8) * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def digit_records() -> list[tuple[int, list[float], bytes, int]]:
    """The 1,797 digits as rows of ``digits``: (id, pixels in [0, 1], 8x8 PNG, human label)."""
    x, y = _digits_arrays()
    return [(i, row.tolist(), _png(row), int(label)) for i, (row, label) in enumerate(zip(x, y, strict=True))]


def review_records(path: Path) -> list[tuple[int, str, int, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [
            (int(r["review_id"]), r["category"], int(r["rating"]), r["review"]) for r in csv.DictReader(f)
        ]


def _quiet_fit(estimator, x, y):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(x, y)


def _save(model, path: Path) -> None:
    """Write atomically: a crash never leaves a half-written model that would later be trusted."""
    model.ir_version = min(model.ir_version, IR_VERSION)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def train_digits_mlp(path: Path) -> None:
    """The accurate, expensive oracle (outputs ``label``, ``probabilities``)."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    x, y = _digits_arrays()
    clf = _quiet_fit(MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=SEED), x, y)
    _save(to_onnx(clf, x[:1], target_opset=OPSET, options={id(clf): {"zipmap": False}}), path)


def train_digits_logreg(path: Path) -> None:
    """The cheap proxy (outputs ``label``, ``probabilities``)."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y = _digits_arrays()
    clf = _quiet_fit(LogisticRegression(max_iter=100, random_state=SEED), x, y)
    _save(to_onnx(clf, x[:1], target_opset=OPSET, options={id(clf): {"zipmap": False}}), path)


def train_text_model(csv_path: Path, path: Path, max_features: int | None) -> None:
    """TF-IDF + LogisticRegression predicting 1-star reviews from a [N, 1] string tensor ``text``."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rows = review_records(csv_path)
    texts = [r[3] for r in rows]
    one_star = [int(r[2] == 1) for r in rows]
    pipe = _quiet_fit(
        make_pipeline(
            TfidfVectorizer(max_features=max_features),
            LogisticRegression(max_iter=300, class_weight="balanced", random_state=SEED),
        ),
        texts,
        one_star,
    )
    # ORT's StringNormalizer needs an installed locale; skl2onnx defaults to en_US.UTF-8, which
    # minimal images lack. C.UTF-8 exists everywhere glibc does.
    options = {id(pipe.steps[0][1]): {"locale": "C.UTF-8"}, id(pipe.steps[-1][1]): {"zipmap": False}}
    onx = convert_sklearn(
        pipe,
        name=path.stem,  # skl2onnx names the graph with a random uuid otherwise
        initial_types=[("text", StringTensorType([None, 1]))],
        target_opset=OPSET,
        options=options,
    )
    _save(onx, path)


# -- install ------------------------------------------------------------------------------------


async def install_demo(dsn: str, models_dir: Path, shared_data: Path | None = SHARED_DATA) -> DemoSummary:
    """Set the demo up through the SieveDB server at ``dsn``; ``models_dir`` must be the directory
    the server resolves model paths against (its ``--models-dir``)."""
    started = time.monotonic()
    _require_ml()
    models_dir = Path(models_dir).expanduser().resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    reviews_csv = shared_data / REVIEWS_CSV if shared_data is not None else None
    if reviews_csv is not None and not reviews_csv.is_file():
        reviews_csv = None

    conn = await asyncpg.connect(dsn)
    try:
        # Session-level: released when the connection closes, however this ends.
        await conn.execute(f"SELECT pg_advisory_lock({_LOCK_KEY})")
        summary = await _install(conn, models_dir, reviews_csv)
    finally:
        await conn.close()
    summary.elapsed_s = time.monotonic() - started
    log.info(
        "demo installed in %.1fs: tables=%s functions=%s views=%s trained=%s",
        summary.elapsed_s,
        summary.tables,
        summary.functions,
        summary.views,
        summary.trained or "none",
    )
    return summary


async def _install(conn: asyncpg.Connection, models_dir: Path, reviews_csv: Path | None) -> DemoSummary:
    summary = DemoSummary(
        tables={},
        loaded={},
        models={},
        trained=[],
        functions={},
        views=[],
        reviews_loaded=reviews_csv is not None,
        examples=list(DIGIT_EXAMPLES),
    )
    wanted = [DIGITS_MLP, DIGITS_LOGREG] + ([REVIEWS_MODEL, REVIEWS_PROXY] if reviews_csv else [])
    summary.models = {name: models_dir / name for name in wanted}
    missing = [name for name, path in summary.models.items() if not path.is_file()]
    for name in wanted:
        if name not in missing:
            log.info("model %s present: not retrained", summary.models[name])
    # Train in a child process while the tables load: the server's process never runs BLAS in a
    # thread (a fork elsewhere in the server would hang OpenBLAS), and its event loop stays free.
    training = asyncio.ensure_future(_train(models_dir, missing, reviews_csv))
    try:
        await _load_table(
            conn, "digits", DIGITS_TABLE, ("id", "pixels", "image", "label"), digit_records, summary
        )
        if reviews_csv is None:
            log.info("no %s beside the project: the reviews part of the demo is skipped", REVIEWS_CSV)
        else:
            await _load_table(
                conn,
                "reviews",
                REVIEWS_TABLE,
                ("review_id", "category", "rating", "review"),
                lambda: review_records(reviews_csv),
                summary,
            )
        await training
    finally:
        if not training.done():
            training.cancel()
            await asyncio.gather(training, return_exceptions=True)
    summary.trained = missing
    await _functions(conn, DIGIT_FUNCTIONS, summary)
    await _view(conn, DIGIT_VIEW, summary)
    await _labels_function(conn, summary)
    await _video(conn, models_dir, summary)
    if reviews_csv is not None:
        await _functions(conn, REVIEW_FUNCTIONS, summary)
        await _view(conn, REVIEW_VIEW, summary)
        summary.examples += REVIEW_EXAMPLES
    rows = await conn.fetch(
        "SELECT name, version FROM sieve.models WHERE name = ANY($1::text[])", list(summary.functions)
    )
    summary.functions.update({r["name"]: r["version"] for r in rows})
    return summary


async def _load_table(
    conn: asyncpg.Connection,
    table: str,
    ddl: str,
    columns: tuple[str, ...],
    records: Callable[[], list[tuple]],
    summary: DemoSummary,
) -> None:
    await conn.execute(ddl)
    async with conn.transaction():
        # Whoever loads holds the table; a concurrent loader then sees the rows and skips.
        await conn.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
        present = await conn.fetchval(f"SELECT count(*) FROM {table}")
        copied = 0
        if present == 0:
            rows = await asyncio.to_thread(records)
            log.info("loading %d rows into %s", len(rows), table)
            await conn.copy_records_to_table(table, records=rows, columns=columns)
            copied = len(rows)
        else:
            log.info("table %s already holds %d rows: left as it is", table, present)
    summary.tables[table] = present + copied
    summary.loaded[table] = copied


async def _train(models_dir: Path, names: list[str], reviews_csv: Path | None) -> None:
    """Train ``names`` into ``models_dir`` in a child ``python -m server.demo train``."""
    if not names:
        return
    args = [sys.executable, "-m", "server.demo", "train", "--models-dir", str(models_dir)]
    if reviews_csv is not None:
        args += ["--reviews-csv", str(reviews_csv)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
    env.setdefault("SIEVEDB_LOG_LEVEL", logging.getLevelName(log.getEffectiveLevel()))
    log.info("training %s (in a child process)", ", ".join(names))
    proc = await asyncio.create_subprocess_exec(*args, *names, env=env, stdin=asyncio.subprocess.DEVNULL)
    try:
        code = await proc.wait()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if code != 0:
        raise DemoError(f"training the demo models failed (exit status {code}); see the log above")


async def _functions(
    conn: asyncpg.Connection, functions: list[tuple[str, str]], summary: DemoSummary
) -> None:
    for name, ddl in functions:
        await conn.execute(ddl)
        summary.functions[name] = 0  # the version is read back from sieve.models at the end
        log.info("model function %s ready", name)


async def _labels_function(conn: asyncpg.Connection, summary: DemoSummary) -> None:
    """The labels oracle on the digits; a server without LANGUAGE labels skips it, and only it."""
    name, ddl = LABELS_FUNCTION
    try:
        await conn.execute(ddl)
    except asyncpg.PostgresError as exc:
        log.warning("the labels demo (%s) is skipped: %s", name, exc)
        return
    summary.labels.append(name)
    summary.examples += LABELS_EXAMPLES
    log.info("labels function %s ready", name)


async def _video(conn: asyncpg.Connection, models_dir: Path, summary: DemoSummary) -> None:
    """The model-assertions demo (``server/demo_video.py``): a street video, a detector that makes
    recorded mistakes, and the assertions that find them. Kept out of ``tables``/``functions``/
    ``views``, which describe the query demo."""
    summary.video = await demo_video.install_video_demo(conn, models_dir)
    summary.assertions = await demo_video.create_assertions(conn)
    summary.examples += list(demo_video.EXAMPLES)


async def _view(conn: asyncpg.Connection, view: tuple[str, str], summary: DemoSummary) -> None:
    name, ddl = view
    await conn.execute(ddl)
    summary.views.append(name)


# -- inside `sievedb serve --demo` ------------------------------------------------------------------


def psql_command(host: str, port: int, user: str, database: str) -> str:
    """A psql line that works against the embedded PostgreSQL 18 (older psql cannot run ``\\l``)."""
    psql = "psql"
    try:
        from storage.embedded import client_bin_dir

        candidate = client_bin_dir() / "psql"
        if candidate.exists():
            psql = str(candidate)
    except Exception:  # no embedded binaries: fall back to whatever psql is on PATH
        pass
    return f"{psql} -h {host} -p {port} -U {user} {database}"


def banner(summary: DemoSummary, psql: str) -> str:
    lines = [
        f"{BANNER_TITLE} ({', '.join(f'{t}: {n} rows' for t, n in summary.tables.items())}; "
        f"models: {', '.join(summary.functions)})",
        *(
            [f"assertions demo: {', '.join(f'{t}: {n} rows' for t, n in summary.video.items())}"]
            if summary.video
            else []
        ),
        "connect with:",
        f"    {psql}",
        *(
            ["in a browser:", *(f"    {what}: {url}" for what, url in summary.links.items())]
            if summary.links
            else []
        ),
        "and try:",
        *(f"    {q}" for q in summary.examples),
    ]
    return "\n".join(lines)


def _server_dsn(server) -> tuple[str, str, int, str, str]:
    host = server.config.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    target = server.backend_target
    user = target.user if target is not None else "postgres"
    database = target.database if target is not None else "postgres"
    password = target.password if target is not None else None
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    netloc = f"[{host}]" if ":" in host else host
    return (
        f"postgresql://{auth}@{netloc}:{server.bound_port}/{quote(database, safe='')}",
        host,
        server.bound_port,
        user,
        database,
    )


async def run_for_server(server, shared_data: Path | None = SHARED_DATA) -> DemoSummary | None:
    """Install the demo through ``server`` (already listening) and log the banner; never raises
    except on cancellation, so a broken demo never takes the server down."""
    dsn, host, port, user, database = _server_dsn(server)
    try:
        summary = await install_demo(dsn, server.config.models_dir, shared_data)
    except asyncio.CancelledError:
        log.info("demo setup interrupted; the next start with --demo picks it up again")
        raise
    except (asyncpg.InterfaceError, asyncpg.AdminShutdownError, ConnectionError) as exc:
        listener = getattr(server, "_listener", None)
        if listener is None or not listener.is_serving():
            log.info("demo setup interrupted by shutdown (%s); --demo picks it up next time", exc)
            return None
        log.exception("demo setup failed: %s", exc)
        return None
    except DemoError as exc:
        log.error("demo setup failed: %s", exc)
        return None
    except Exception as exc:
        log.exception("demo setup failed: %s", exc)
        return None
    if getattr(server, "web", None) is not None:
        summary.links = await web_links(dsn, server.web.url, LABELS_FUNCTION[0] in summary.labels)
    log.info("%s", banner(summary, psql_command(host, port, user, database)))
    return summary


async def web_links(dsn: str, base_url: str, labels: bool) -> dict[str, str]:
    """The web face's pages for the banner: the labelling link of the demo's labels function
    and the status page, as SQL hands them out (tokens of the demo's role)."""
    links: dict[str, str] = {}
    try:
        conn = await asyncpg.connect(dsn)
        try:
            if labels:
                links["label the digits in a browser"] = await conn.fetchval(
                    f"SELECT sieve.labelling_link('{LABELS_FUNCTION[0]}')"
                )
            links["status page"] = await conn.fetchval("SELECT sieve.status_link()")
        finally:
            await conn.close()
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("no web links for the banner: %s", exc)
    links["Prometheus metrics"] = f"{base_url}/metrics"
    return links


def start_for_server(server, shared_data: Path | None = SHARED_DATA) -> asyncio.Task:
    """Run :func:`run_for_server` in the background of the server's event loop."""
    return asyncio.get_running_loop().create_task(run_for_server(server, shared_data), name="sievedb-demo")


async def run_standalone(dsn: str, models_dir: Path, shared_data: Path | None = SHARED_DATA) -> int:
    """``sievedb demo``: install into a server that is already running elsewhere."""
    try:
        summary = await install_demo(dsn, models_dir, shared_data)
    except (DemoError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.error("demo setup failed: %s", exc)
        return 1
    url = urlparse(dsn)
    psql = psql_command(
        url.hostname or "localhost", url.port or 5432, url.username or "postgres", url.path.lstrip("/")
    )
    log.info("%s", banner(summary, psql))
    return 0


# -- the training child ---------------------------------------------------------------------------

TRAINERS: dict[str, Callable[[Path, Path | None], None]] = {
    DIGITS_MLP: lambda path, _: train_digits_mlp(path),
    DIGITS_LOGREG: lambda path, _: train_digits_logreg(path),
    REVIEWS_MODEL: lambda path, csv_path: train_text_model(csv_path, path, 5000),
    REVIEWS_PROXY: lambda path, csv_path: train_text_model(csv_path, path, 300),
}


def train_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.demo train")
    parser.add_argument("command", choices=["train"])
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--reviews-csv", type=Path)
    parser.add_argument("models", nargs="+", choices=sorted(TRAINERS))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C reaches the whole group: the server kills us
    logging.basicConfig(
        level=os.environ.get("SIEVEDB_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for name in args.models:
        began = time.monotonic()
        TRAINERS[name](args.models_dir / name, args.reviews_csv)
        log.info("trained %s in %.1fs", args.models_dir / name, time.monotonic() - began)
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
