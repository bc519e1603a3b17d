"""README.md does what it says: its SQL examples run on the demo, and it agrees with the Makefile and the CLI.

Every fenced ```sql block of README.md runs against a ``sievedb serve --demo`` server, one session per
block (simple query protocol, as psql sends), statement by statement in order. Before each statement
every model's cache is cleared, so what a statement costs is what it costs a new user. Each statement
must succeed; what the README states about it is then asserted:

- a trailing ``-- comment`` on the statement's last line is a claim in one of the forms of ``CLAIMS``
  (``100 rows``, ``100``, ``runs the model for <= 100 rows``, ``stops early: < 25% of the rows``,
  ``ML operators first``, ``model calls per query``, ``automatic proxy``); a comment in no known
  form fails, so a README claim is never left unchecked;
- the approximate clauses promise their own results: ``BUDGET n`` is never exceeded (oracle calls in
  ``sieve.query_log`` and rows labelled in the NOTICE), ``RECALL``/``PRECISION TARGET`` and
  ``ERROR TARGET`` are met against the exact answer (the session's ``sieve.seed`` makes the run
  reproducible), a proxy-ordered ``LIMIT n`` returns n qualifying rows;
- an exact ``LIMIT n`` query returns min(n, all) rows, each one the unlimited query returns too.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
import pytest

from server.cli import build_parser
from tests.support.servers import REPO, SieveProcess
from tests.test_demo import start_demo_server

README = REPO / "README.md"
MAKEFILE_STAMP = ".venv/.installed-stamp"  # `make -o` it: the tests never reinstall the venv
_MAKE_OVERRIDES = {"HOST", "PORT", "DATA_DIR", "MODELS_DIR", "PSQL_ARGS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}


# -- README parsing -------------------------------------------------------------------------------


@dataclass
class Statement:
    line: int  # 1-based line of README.md where the statement starts
    sql: str  # as written, up to and including its ';'
    claim: str | None  # the trailing '-- ...' comment of its last line

    @property
    def id(self) -> str:
        words = re.sub(r"[^\w<>=%*.,() -]", "", " ".join(self.sql.split()))
        return f"L{self.line} {words[:60].strip()}"


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    statements: list[Statement] = field(default_factory=list)


def _split_comment(line: str) -> tuple[str, str | None]:
    """(code, comment) of one SQL line: the first '--' outside a string literal starts the comment."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == "'":
            quoted = not quoted
        elif not quoted and line.startswith("--", i):
            return line[:i].rstrip(), line[i + 2 :].strip()
    return line.rstrip(), None


def readme_sql_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    block: Block | None = None
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if block is None:
            if stripped == "```sql":
                block = Block(number)
            continue
        if stripped == "```":
            assert not pending, f"README.md:{start}: SQL statement without ';' before the fence"
            blocks.append(block)
            block = None
            continue
        code, comment = _split_comment(raw)
        if not pending and not code.strip():
            continue  # a blank or comment-only line between statements
        if not pending:
            start = number
        pending.append(code)
        if code.endswith(";"):
            sql = "\n".join(pending).strip()
            block.statements.append(Statement(start, sql, comment))
            pending = []
    assert block is None, "README.md: unclosed ```sql fence"
    return blocks


BLOCKS = readme_sql_blocks(README.read_text())
CASES = [(b, s) for b in range(len(BLOCKS)) for s in range(len(BLOCKS[b].statements))]


# -- the demo server ------------------------------------------------------------------------------


@dataclass
class Run:
    """What one statement did."""

    statement: Statement
    columns: list[str]
    rows: list[tuple] | None
    notices: list[str]
    model_calls: dict[str, int]  # summed over the sieve.query_log rows it wrote
    log_rows: list[dict]


class Demo:
    def __init__(self, server: SieveProcess) -> None:
        self.server = server
        self.admin = self.connect()
        self.sessions: dict[int, tuple[psycopg.Connection, list[str]]] = {}
        # The exact answer the approximate examples are held to (computed before any cache clear).
        self.sevens = {
            r[0] for r in self.admin.execute("SELECT id FROM digits WHERE digit_oracle(pixels) = 7")
        }
        self.digits = self.admin.execute("SELECT count(*) FROM digits").fetchone()[0]

    def connect(self) -> psycopg.Connection:
        # ClientCursor: the simple query protocol, as psql (the README's client) sends statements.
        return psycopg.connect(self.server.dsn(), autocommit=True, cursor_factory=psycopg.ClientCursor)

    def session(self, block: int) -> tuple[psycopg.Connection, list[str]]:
        if block not in self.sessions:
            conn = self.connect()
            notices: list[str] = []
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            self.sessions[block] = (conn, notices)
        return self.sessions[block]

    def clear_caches(self) -> None:
        # Only models whose function exists: a catalog row a DROP left behind is test_..._drop's
        # failure, not every later example's.
        self.admin.execute(
            "SELECT sieve.clear_cache(m.name) FROM sieve.models m "
            "WHERE EXISTS (SELECT FROM pg_proc p WHERE p.proname = m.name)"
        )

    def last_query_id(self) -> int:
        return self.admin.execute("SELECT coalesce(max(query_id), 0) FROM sieve.query_log").fetchone()[0]

    def run(self, block: int, statement: Statement) -> Run:
        conn, notices = self.session(block)
        self.clear_caches()
        before = self.last_query_id()
        notices.clear()
        cur = conn.execute(statement.sql)
        rows = cur.fetchall() if cur.description is not None else None
        columns = [c.name for c in cur.description] if cur.description is not None else []
        log_rows = [
            r[0]
            for r in self.admin.execute(
                "SELECT to_jsonb(q) FROM sieve.query_log q WHERE query_id > %s ORDER BY query_id", [before]
            )
        ]
        calls: dict[str, int] = {}
        for r in log_rows:
            for model, n in (r.get("model_calls") or {}).items():
                calls[model] = calls.get(model, 0) + int(n)
        return Run(statement, columns, rows, list(notices), calls, log_rows)

    def close(self) -> None:
        for conn, _ in self.sessions.values():
            conn.close()
        self.admin.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("readme")
    server = SieveProcess(
        data_dir=root / "data",
        extra_args=["--demo", "--models-dir", str(root / "models"), "--inference-workers", "1"],
    )
    try:
        start_demo_server(server)
        demo = Demo(server)
        try:
            yield demo
        finally:
            demo.close()
    finally:
        server.stop()


# -- claims -----------------------------------------------------------------------------------------


def _from_relation(sql: str) -> str:
    m = re.search(r"\bFROM\s+([A-Za-z_][\w.]*)", sql, re.IGNORECASE)
    assert m, f"no FROM relation in {sql!r}"
    return m.group(1)


def _rows_claim(demo: Demo, run: Run, m: re.Match) -> None:
    assert run.rows is not None and len(run.rows) == int(m.group(1)), run.rows


def _value_claim(demo: Demo, run: Run, m: re.Match) -> None:
    assert run.rows is not None and len(run.rows) == 1 and len(run.rows[0]) == 1, run.rows
    assert run.rows[0][0] == int(m.group(1))


def _at_most_claim(demo: Demo, run: Run, m: re.Match) -> None:
    limit = int(m.group(1))
    assert run.model_calls and sum(run.model_calls.values()) > 0, (
        f"no model ran with cold caches: {run.log_rows}"
    )
    over = {model: n for model, n in run.model_calls.items() if n > limit}
    assert not over, f"models ran on more than {limit} rows: {run.model_calls}"


def _early_stop_claim(demo: Demo, run: Run, m: re.Match) -> None:
    share = float(m.group(1)) / 100
    relation = _from_relation(run.statement.sql)
    total = demo.admin.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]
    assert run.model_calls, f"no model calls logged: {run.log_rows}"
    over = {model: n for model, n in run.model_calls.items() if n >= share * total}
    assert not over, (
        f"models ran on >= {share:.0%} of the {total} rows of {relation}: {run.model_calls} "
        f"(the README promises it stops early)"
    )


def _ml_operators_claim(demo: Demo, run: Run, m: re.Match) -> None:
    lines = [r[0] for r in run.rows or []]
    assert lines and lines[0].startswith("SieveDB"), lines[:3]
    postgres = next((i for i, line in enumerate(lines) if line.strip() == "->  Postgres"), None)
    assert postgres is not None, "\n".join(lines)
    operators = lines[:postgres]
    assert any("Model Call" in line for line in operators), "\n".join(lines)
    if re.match(r"\s*EXPLAIN\s+ANALYZE\b", run.statement.sql, re.IGNORECASE):
        assert any("model calls=" in line for line in operators), "\n".join(lines)


def _query_log_claim(demo: Demo, run: Run, m: re.Match) -> None:
    assert {"query", "model_calls"} <= set(run.columns), run.columns
    assert run.rows, "sieve.query_log is empty after the examples before it"
    calls = run.rows[0][run.columns.index("model_calls")]
    assert isinstance(calls, dict) and calls, run.rows[0]


def _automatic_proxy_claim(demo: Demo, run: Run, m: re.Match) -> None:
    assert any("automatic proxy" in n for n in run.notices), run.notices


CLAIMS: list[tuple[re.Pattern, Callable[[Demo, Run, re.Match], None]]] = [
    (re.compile(r"(\d+) rows"), _rows_claim),
    (re.compile(r"(\d+)"), _value_claim),
    (re.compile(r"runs the models? for <= (\d+) rows"), _at_most_claim),
    (re.compile(r"stops early: < (\d+(?:\.\d+)?)% of the rows"), _early_stop_claim),
    (re.compile(r"ML operators first"), _ml_operators_claim),
    (re.compile(r"model calls per query"), _query_log_claim),
    (re.compile(r"automatic proxy"), _automatic_proxy_claim),
]


# -- what the SQL itself promises ------------------------------------------------------------------

_PCT = r"(\d+(?:\.\d+)?)\s*%"


def _clause(sql: str, pattern: str) -> float | None:
    m = re.search(pattern, sql, re.IGNORECASE)
    return float(m.group(1)) if m else None


def _check_approximate(demo: Demo, run: Run) -> None:
    sql = run.statement.sql
    recall = _clause(sql, rf"RECALL\s+TARGET\s+{_PCT}")
    precision = _clause(sql, rf"PRECISION\s+TARGET\s+{_PCT}")
    error = _clause(sql, rf"ERROR\s+TARGET\s+{_PCT}")
    budget = _clause(sql, r"BUDGET\s+(\d+)")
    proxy = re.search(r"USING\s+PROXY\s+([A-Za-z_]\w*)\s*\(", sql, re.IGNORECASE)
    limit = _clause(sql, r"\bLIMIT\s+(\d+)")
    approximate = any(v is not None for v in (recall, precision, error, budget)) or proxy is not None
    if not approximate:
        return
    sevens = re.search(r"\bdigit_oracle\s*\(\s*pixels\s*\)\s*=\s*7\b", sql) is not None
    if not sevens and error is None:
        pytest.fail(f"teach the test the exact answer of {sql!r}")
    explain = bool(re.match(r"\s*EXPLAIN\b", sql, re.IGNORECASE))
    assert run.notices or explain, "an approximate query reports what it did in a NOTICE"
    assert not any("TARGET NOT MET" in n.upper() for n in run.notices), run.notices
    if budget is not None:
        oracle_calls = {m: n for m, n in run.model_calls.items() if not (proxy and m == proxy.group(1))}
        assert sum(oracle_calls.values()) <= budget, f"BUDGET {budget:.0f} exceeded: {run.model_calls}"
        for n in run.notices:
            labelled = re.search(r"(\d+) rows labelled", n)
            if labelled:
                assert int(labelled.group(1)) <= budget, n
    if explain:
        lines = [r[0] for r in run.rows or []]
        assert lines and lines[0].startswith("SieveDB"), lines[:3]
        if re.match(r"\s*EXPLAIN\s+ANALYZE\b", sql, re.IGNORECASE):
            assert any(line.strip() == "Target Met: True" for line in lines), "\n".join(lines)
        return
    if error is not None and not sevens:
        _check_estimates(demo, run, error / 100)
        return
    truth = demo.sevens
    if error is not None:
        assert run.rows is not None and len(run.rows) == 1, run.rows
        estimate = run.rows[0][0]
        assert abs(estimate - len(truth)) <= error / 100 * len(truth), (
            f"estimate {estimate} is not within {error}% of the exact {len(truth)}"
        )
        return
    returned = {r[0] for r in run.rows or []}
    hits = len(returned & truth)
    if recall is not None:
        assert hits / len(truth) >= recall / 100, f"recall {hits}/{len(truth)} < {recall}%"
    if precision is not None:
        assert returned and hits / len(returned) >= precision / 100, (
            f"precision {hits}/{len(returned)} < {precision}%"
        )
    if limit is not None:
        assert len(returned) == min(int(limit), len(truth)) and returned <= truth, sorted(returned)


def _check_estimates(demo: Demo, run: Run, error: float) -> None:
    """Each estimate of an ERROR TARGET query (no GROUP BY) within the error of the exact answer,
    which the same statement without its clause gives."""
    exact_sql = re.split(r"\bERROR\s+TARGET\b", run.statement.sql, flags=re.IGNORECASE)[0]
    (exact,) = demo.admin.execute(exact_sql).fetchall()
    assert run.rows is not None and len(run.rows) == 1, run.rows
    for estimate, truth in zip(run.rows[0], exact, strict=True):
        assert abs(float(estimate) - float(truth)) <= error * abs(float(truth)), (estimate, truth)


def _check_exact_limit(demo: Demo, run: Run) -> None:
    """An exact LIMIT n returns min(n, all) of the rows the query returns without its LIMIT."""
    sql = run.statement.sql
    m = re.search(r"\s+LIMIT\s+(\d+)\s*;\s*$", sql, re.IGNORECASE)
    if m is None or re.search(r"\bORDER\s+BY\b|\bsieve\.", sql, re.IGNORECASE) or run.rows is None:
        return
    unlimited = demo.admin.execute(sql[: m.start()]).fetchall()
    assert len(run.rows) == min(int(m.group(1)), len(unlimited))
    assert set(run.rows) <= set(unlimited), sorted(set(run.rows) - set(unlimited))


def _check_drop(demo: Demo, run: Run) -> None:
    """DROP FUNCTION of models forgets them: no sieve.models row outlives its function."""
    m = re.match(
        r"\s*DROP\s+FUNCTION\s+(?:IF\s+EXISTS\s+)?(.*?)\s*(?:CASCADE|RESTRICT)?\s*;", run.statement.sql, re.I
    )
    if m is None:
        return
    names = [re.sub(r"\(.*", "", n).strip() for n in m.group(1).split(",")]
    left = demo.admin.execute("SELECT name FROM sieve.models WHERE name = ANY(%s)", [names]).fetchall()
    gone = demo.admin.execute("SELECT count(*) FROM pg_proc WHERE proname = ANY(%s)", [names]).fetchone()[0]
    assert gone == 0 and not left, f"after {run.statement.sql!r}: sieve.models still lists {left}"


# -- the tests --------------------------------------------------------------------------------------


def test_the_readme_has_sql_examples():
    assert len(BLOCKS) >= 3 and sum(len(b.statements) for b in BLOCKS) >= 15
    claimed = [s for b in BLOCKS for s in b.statements if s.claim]
    assert len(claimed) >= 5


@pytest.mark.parametrize(("block", "index"), CASES, ids=[BLOCKS[b].statements[s].id for b, s in CASES])
def test_readme_sql_example(demo, block: int, index: int):
    statement = BLOCKS[block].statements[index]
    try:
        run = demo.run(block, statement)
    except psycopg.Error as exc:
        pytest.fail(f"README.md:{statement.line} fails on the demo: {exc.sqlstate} {exc}")
    if statement.claim is not None:
        for pattern, check in CLAIMS:
            m = pattern.fullmatch(statement.claim)
            if m:
                check(demo, run, m)
                break
        else:
            pytest.fail(f"README.md:{statement.line}: teach this test the claim {statement.claim!r}")
    _check_approximate(demo, run)
    _check_exact_limit(demo, run)
    _check_drop(demo, run)


# -- README, Makefile and CLI agree -------------------------------------------------------------------


def _make(*args: str) -> str:
    # The Makefile's own defaults: no overrides from the environment or from an enclosing `make test`.
    env = {k: v for k, v in os.environ.items() if k not in _MAKE_OVERRIDES}
    out = subprocess.run(
        ["make", "-s", "-o", MAKEFILE_STAMP, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _readme_text() -> str:
    return " ".join(README.read_text().split())


def test_readme_states_what_make_run_runs():
    command = _make("-n", "run").strip()
    assert command.startswith(".venv/bin/sievedb serve ")
    quoted = re.search(r"`make run` runs `(sievedb serve [^`]*)`", _readme_text())
    assert quoted, "README.md no longer says what `make run` runs"
    assert quoted.group(1) == command.removeprefix(".venv/bin/")


def _cli_options() -> dict[str, dict[str, object]]:
    """sievedb's subcommands -> their long options -> defaults, from the real argument parser."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options: dict[str, dict[str, object]] = {}
    for name, command in sub.choices.items():
        options[name] = {
            o: a.default
            for a in command._actions
            for o in a.option_strings
            if o.startswith("--") and o != "--help"
        }
    return options


def _usage_blocks() -> dict[str, str]:
    text = README.read_text()
    m = re.search(r"## Running\s*```\n(.*?)```", text, re.DOTALL)
    assert m, "README.md has no usage block under '## Running'"
    usage: dict[str, str] = {}
    current = None
    for line in m.group(1).splitlines():
        head = re.match(r"sievedb (\w+)\s", line)
        if head:
            current = head.group(1)
            usage[current] = ""
        assert current, line
        usage[current] += " " + line
    return usage


def test_readme_usage_lists_the_cli_options_with_their_defaults():
    cli = _cli_options()
    usage = _usage_blocks()
    assert set(usage) == set(cli)
    for command, options in cli.items():
        listed = re.findall(r"--[a-z][a-z-]*", usage[command])
        assert sorted(listed) == sorted(options), f"sievedb {command}"
        for option, shown in re.findall(r"(--[a-z][a-z-]*) ([^\s\[\]]+)\]", usage[command]):
            default = options[option]
            if shown.isupper() or default is None:
                continue  # a placeholder (N, F, DSN, INFO from the environment)
            if isinstance(default, int | float):
                assert float(shown) == float(default), f"sievedb {command} {option}"
            else:
                assert shown == str(default), f"sievedb {command} {option}"


def test_make_run_uses_the_documented_defaults():
    """make run's host, port, data and models directories are the CLI's defaults the README shows."""
    args = _make("-n", "run").split()
    serve = _cli_options()["serve"]
    for option in ("--host", "--port", "--data-dir", "--models-dir"):
        assert str(serve[option]) == args[args.index(option) + 1], option
    assert "--demo" in args


def test_make_psql_is_the_postgres_18_psql_and_lists_databases(demo):
    """The README's `make psql` opens the PostgreSQL 18 psql on make run's port; `\\l` works."""
    from storage.embedded import client_bin_dir

    command = _make("-n", "psql").split()
    assert command[0] == str(client_bin_dir() / "psql")
    assert command[command.index("-p") + 1] == str(_cli_options()["serve"]["--port"])
    out = _make("psql", f"PORT={demo.server.port}", "PSQL_ARGS=-X -c '\\l' -c 'SELECT count(*) FROM digits'")
    assert "List of databases" in out and "1797" in out


def test_readme_psql_line_without_make_works(demo):
    m = re.search(r"```sh\n(\$\(\.venv/bin/python [^\n]*/psql [^\n]*)\n```", README.read_text())
    assert m, "README.md no longer shows the psql line without make"
    line = m.group(1)
    assert "-p 5433 " in line
    line = line.replace("-p 5433 ", f"-p {demo.server.port} ")
    out = subprocess.run(
        ["bash", "-c", line + " -X -c '\\l'"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "List of databases" in out.stdout, out.stdout + out.stderr


def test_readme_quickstart_names_make_targets_that_exist():
    quick = re.search(r"## Quickstart\s*```sh\n(.*?)```", README.read_text(), re.DOTALL)
    assert quick
    targets = re.findall(r"^make (\w+)", quick.group(1), re.MULTILINE)
    assert {"run", "psql", "test"} <= set(targets)
    phony = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert phony and set(targets) <= set(phony.group(1).split())
