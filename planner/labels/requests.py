"""Where a query would run a model, a labels function asks people instead.

The call site's inputs are read in the client's session (its role, snapshot, search_path) as
for any model; those with no label in the cache become rows of ``sieve.label_queue`` (one per
input: a re-request keeps it), with what a labeller is shown and, when the call reads plain
columns of one table with a one-column primary key, the row they came from. Then the statement
fails with SV001 saying how many labels are pending and where to give them, or, under
``SET sieve.label_wait = '30min'``, waits for them (polling SieveDB's own connection, woken at
once by labels given through this server), with a progress NOTICE every few seconds; a cancel,
statement_timeout or client disconnect cancels the wait like any materialization. The requests
stay either way. Labels a statement reads for the first time count as its model calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from planner.calls import CallSite
from planner.install import digest_sql, quote_ident
from planner.labels import store
from planner.model_spec import ModelSpec
from planner.outcome import PlanError, SessionPort
from planner.row_maps import site_key
from planner.send_forms import digests_of, send_sql
from planner.sqlstate import LABELS_PENDING

log = logging.getLogger("sievedb.planner.labels")

CHUNK_ROWS = 1024
POLL_S = 1.0  # labels given through another front-end are seen within this
NOTICE_EVERY_S = 3.0
T = TypeVar("T")
_wakeups: dict[int, set[asyncio.Event]] = defaultdict(set)

_LABEL_WAIT = (
    "SELECT pg_catalog.date_part('epoch', coalesce(nullif(pg_catalog.current_setting("
    "'sieve.label_wait', true), ''), '0')::pg_catalog.interval)::pg_catalog.float8"
)
SOURCE_SQL = (
    "SELECT c.oid::int8, pg_catalog.format('%I.%I', n.nspname, c.relname), a.attname::text "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary AND i.indnatts = 1 "
    "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] "
    "WHERE c.oid = pg_catalog.to_regclass($1)"
)


def poke(model_id: int) -> None:
    """A label of this function was given here: wake the statements waiting for its labels."""
    for event in list(_wakeups.get(model_id, ())):
        event.set()


@dataclass
class StatementLabels:
    """What one statement does with labels: its text (a request records it), the labels it read
    first and so counts as its model calls (handed back when it ends in SV001: the statement
    that succeeds counts them), and, while an approximate query collects, the inputs it found
    unlabelled per function (model id -> spec, digests)."""

    sql: str = ""
    collect: bool = False
    marked: list[tuple[int, list[bytes]]] = field(default_factory=list)
    pending: dict[int, tuple[ModelSpec, dict[bytes, None]]] = field(default_factory=dict)


_statement: contextvars.ContextVar[StatementLabels | None] = contextvars.ContextVar(
    "sieve_labels_statement", default=None
)


def begin_statement(sql: str) -> None:
    """The planner starts a statement (its tasks inherit the state)."""
    _statement.set(StatementLabels(sql))


def current_sql() -> str:
    return _current().sql


def labels_pending() -> bool:
    """Whether the statement running is an approximate query that found inputs unlabelled: its
    answer is provisional (it ends in SV001, or runs again once they are labelled), so it should
    not be logged or reported as an answer."""
    found = _statement.get()
    return found is not None and found.collect and bool(found.pending)


def _current() -> StatementLabels:
    found = _statement.get()
    if found is None:
        found = StatementLabels()
        _statement.set(found)
    return found


async def request_labels(site: CallSite, spec: ModelSpec, dbs, port: SessionPort, result) -> None:
    """The labels-function counterpart of planner.materialize.materialize_site."""
    statement = _current()
    source = await _source(site, port)
    query = _input_query(site, spec, source)
    missing: dict[bytes, None] = {}
    hits: list[bytes] = []
    async with port.stream(query, chunk_rows=CHUNK_ROWS) as chunks:
        async for rows in chunks:
            wanted = _new_requests(spec, rows, missing, hits, source)
            if wanted:
                async with dbs.write.acquire() as conn:
                    await store.file_requests(
                        conn, int(spec.id), spec.cache_table, wanted, port.user, statement.sql
                    )
    await _count_read(dbs, spec, hits, result, statement)
    if not missing:
        return
    log.info("labels requested function=%s inputs=%d", spec.name, len(missing))
    if statement.collect:  # read as unlabelled for now (lenient reads): see run_collecting
        statement.pending.setdefault(int(spec.id), (spec, {}))[1].update(missing)
        return
    wait_s = await _wait_setting(port)
    digests = list(missing)
    if wait_s <= 0:
        await _hand_back(dbs, statement)
        raise _pending_error({spec.name: (len(digests), len(digests))})
    await _wait(dbs, port, {int(spec.id): (spec, digests)}, wait_s, statement)
    await _count_read(dbs, spec, digests, result, statement)


async def run_collecting(run: Callable[[], Awaitable[T]], dbs, port: SessionPort) -> T:
    """Run an approximate query collecting the labels it needs: an input with no label reads
    as unlabelled (the query's lenient reads), so every unit it samples is asked for at once
    (only draws that depend on labels can ask for more later). Then SV001 with all of them, or,
    under sieve.label_wait, wait for them and run the query again (the same seed draws the same
    units: now labelled)."""
    statement = _current()
    statement.collect = True
    started: float | None = None
    try:
        while True:
            statement.pending = {}
            try:
                outcome = await run()
            except PlanError:
                if not statement.pending:
                    raise
                outcome = None  # a strict read of an unlabelled input: the labels come first
            if not statement.pending:
                return outcome
            wanted = {m: (spec, list(d)) for m, (spec, d) in statement.pending.items()}
            wait_s = await _wait_setting(port)
            started = time.monotonic() if started is None else started
            left = wait_s - (time.monotonic() - started)
            if left <= 0:
                await _hand_back(dbs, statement)
                raise _pending_error({s.name: (len(d), len(d)) for s, d in wanted.values()})
            await _wait(dbs, port, wanted, left, statement)
    finally:
        statement.collect = False


async def _count_read(dbs, spec: ModelSpec, digests: list[bytes], result, statement: StatementLabels) -> None:
    """Labels this statement reads: those answered since a statement last read them count as
    its model calls (as inputs a model ran on), the others as cache hits."""
    used = await store.mark_used(dbs.write, int(spec.id), digests)
    if used:
        statement.marked.append((int(spec.id), used))
    result.add(spec.name, len(used), len(digests) - len(used))


async def _hand_back(dbs, statement: StatementLabels) -> None:
    """The statement ends in SV001: the labels it counted are counted by the one that succeeds."""
    for model_id, digests in statement.marked:
        await store.unmark_used(dbs.write, model_id, digests)
    statement.marked = []


async def _wait_setting(port: SessionPort) -> float:
    if not getattr(port, "uses_sieve_settings", True):  # a session that never named sieve.*
        return 0.0
    return float(await port.fetchval(_LABEL_WAIT) or 0.0)


async def _source(site: CallSite, port: SessionPort) -> tuple[int, str, str, str] | None:
    """(table oid, table, primary key column, alias) when the call reads plain columns of one
    table with a one-column primary key: the row a request came from."""
    found = site_key(site)
    if found is None:
        return None
    key, relation = found
    name = ".".join(quote_ident(p) for p in key.relation)
    rows = await port.fetch(SOURCE_SQL, (name,))
    if not rows:
        return None
    alias = relation.alias.aliasname if relation.alias is not None else relation.relname
    oid, table, column = rows[0]
    return int(oid), table, column, alias


def _input_query(site: CallSite, spec: ModelSpec, source) -> str:
    """Rows (digest, labelled?, then for unlabelled inputs each argument's send form and shown
    form, and the source row's key)."""
    types = [t for _, t in spec.args]
    args = ", ".join(f"({a})::{t.sql} AS a{i}" for i, (a, t) in enumerate(zip(site.args, types, strict=True)))
    key = f"({quote_ident(source[3])}.{quote_ident(source[2])})::text" if source else "NULL::text"
    digest = digest_sql(spec, list(site.args))
    inner = f"{site.with_sql} SELECT {digest} AS sieve_digest, {args}, {key} AS sieve_key".lstrip()
    if site.from_sql:
        inner += f" FROM {site.from_sql}"
    if site.where_sql:
        inner += f" WHERE {site.where_sql}"
    cached = "c.digest IS NOT NULL"
    sends = [f"CASE WHEN {cached} THEN NULL ELSE {send_sql(t, f'i.a{i}')} END" for i, t in enumerate(types)]
    shown = [
        f"CASE WHEN {cached} THEN NULL ELSE (i.a{i})::text END" if t.base != "bytea" else "NULL::text"
        for i, t in enumerate(types)
    ]
    return (
        f"SELECT i.sieve_digest, {cached}, {', '.join([*sends, *shown])}, i.sieve_key "
        f"FROM ({inner} OFFSET 0) AS i LEFT JOIN {spec.cache_table} c ON c.digest = i.sieve_digest "
        "AND c.ordinal = 0 WHERE i.sieve_digest IS NOT NULL"
    )


def _new_requests(spec: ModelSpec, rows: list, missing: dict, hits: list, source) -> list[store.NewRequest]:
    """Requests for a chunk's unlabelled inputs not met before (keyed by the digest SieveDB
    computes from the send forms, as for model inputs); the labelled ones go to ``hits``."""
    width = len(spec.args)
    unlabelled = [r for r in rows if not r[1]]
    hits += [bytes(r[0]) for r in rows if r[1]]
    sends = [[bytes(r[2 + k]) for r in unlabelled] for k in range(width)]
    digests = digests_of(sends) if unlabelled else []
    names = [n for n, _ in spec.args]
    types = [t.sql for _, t in spec.args]
    wanted = []
    for row, digest in zip(unlabelled, digests, strict=True):
        if digest in missing:
            continue
        missing[digest] = None
        blobs = [bytes(row[2 + k]) if t.base == "bytea" else None for k, (_, t) in enumerate(spec.args)]
        texts = [row[2 + width + k] for k in range(width)]
        key = row[2 + 2 * width]
        table = (source[0], source[1]) if source and key is not None else (None, None)
        wanted.append(store.NewRequest(digest, names, types, texts, blobs, table[0], table[1], key))
    return wanted


async def _wait(
    dbs, port: SessionPort, wanted: dict[int, tuple[ModelSpec, list[bytes]]], wait_s: float, statement
) -> None:
    """Until every wanted input is labelled, or SV001 after ``wait_s`` seconds."""
    await port.arm_statement_timeout()
    event = asyncio.Event()
    for model_id in wanted:
        _wakeups[model_id].add(event)
    started = time.monotonic()
    last_notice = 0.0
    try:
        while True:
            counts = {
                spec.name: (await store.count_pending(dbs.read, m, digests), len(digests))
                for m, (spec, digests) in wanted.items()
            }
            if not any(pending for pending, _ in counts.values()):
                return
            now = time.monotonic()
            left = wait_s - (now - started)
            if left <= 0:
                await _hand_back(dbs, statement)
                raise _pending_error(counts, waited=wait_s)
            if now - last_notice >= NOTICE_EVERY_S:
                last_notice = now
                port.notice(_waiting(counts, left))
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(POLL_S, left))
    finally:
        for model_id in wanted:
            _wakeups[model_id].discard(event)


def _waiting(counts: dict[str, tuple[int, int]], left: float) -> str:
    parts = [f"{p} of {t} labels of {name}" for name, (p, t) in counts.items() if p]
    first = next(name for name, (p, _) in counts.items() if p)
    return (
        f"waiting for {'; '.join(parts)} ({left:,.0f} s left; "
        f"SELECT sieve.labelling_link('{first}') gives a labelling page)"
    )


def _pending_error(counts: dict[str, tuple[int, int]], waited: float | None = None) -> PlanError:
    """SV001: how many labels are pending for which function, and where to give them."""
    pending = {name: c for name, c in counts.items() if c[0]}
    name = next(iter(pending)).replace("'", "''")
    after = f" after waiting {waited:,.0f} s" if waited is not None else ""
    listed = "; ".join(f"{p} of {t} labels pending for function {n}" for n, (p, t) in pending.items())
    return PlanError(
        LABELS_PENDING,
        f"{listed}{after}",
        detail="The statement needs labels people give; its inputs are queued in sieve.label_requests "
        "and stay there until labelled.",
        hint=f"give them at the link SELECT sieve.labelling_link('{name}') returns, or with "
        f"SELECT sieve.label('{name}', 'table', key, value); then run the statement again "
        "(SET sieve.label_wait = '30min' waits for them instead)",
    )
