"""Where a query would run a model, a labels function asks people instead.

The call site's inputs are read in the client's session (its role, snapshot, search_path) as
for any model; those with no label in the cache become rows of ``sieve.label_queue`` (one per
input: a re-request keeps it), with what a labeller is shown and, when the call reads plain
columns of one table with a one-column primary key, the row they came from. Then the statement
fails with SV001 or waits for them (planner/labels/waiting.py); inside an approximate query the
inputs read as unlabelled until the query ends, so its whole sample is asked for at once.
Labels a statement reads for the first time count as its model calls.
"""

from __future__ import annotations

import logging

from planner.calls import CallSite
from planner.install import digest_sql, quote_ident
from planner.labels import store
from planner.labels.statement import count_read, current, hand_back
from planner.labels.waiting import pending_error, wait_for_labels, wait_setting
from planner.model_spec import ModelSpec
from planner.outcome import SessionPort
from planner.row_maps import site_key
from planner.send_forms import digests_of

log = logging.getLogger("sievedb.planner.labels")

CHUNK_ROWS = 1024
SOURCE_SQL = (
    "SELECT c.oid::int8, pg_catalog.format('%I.%I', n.nspname, c.relname), a.attname::text "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary AND i.indnatts = 1 "
    "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] "
    "WHERE c.oid = pg_catalog.to_regclass($1)"
)


async def request_labels(site: CallSite, spec: ModelSpec, dbs, port: SessionPort, result) -> None:
    """The labels-function counterpart of planner.materialize.materialize_site."""
    statement = current()
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
    await count_read(dbs, spec, hits, result, statement)
    if not missing:
        return
    log.info("labels requested function=%s inputs=%d", spec.name, len(missing))
    if statement.collect:  # read as unlabelled for now (lenient reads): see run_collecting
        statement.pending.setdefault(int(spec.id), (spec, {}))[1].update(missing)
        return
    wait_s = await wait_setting(port)
    digests = list(missing)
    if wait_s <= 0:
        await hand_back(dbs, statement)
        raise pending_error({spec.name: (len(digests), len(digests))})
    await wait_for_labels(dbs, port, {int(spec.id): (spec, digests)}, wait_s, statement)
    await count_read(dbs, spec, digests, result, statement)


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
    key = f"({quote_ident(source[3])}.{quote_ident(source[2])})::text" if source else "NULL::text"
    types = [t for _, t in spec.args]
    return site.input_query(
        digest_sql(spec, list(site.args)), types, spec.cache_table, shown=True, key_sql=key
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
