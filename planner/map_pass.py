"""A call site's pass over its table when it keeps a row map (planner.row_maps): which rows the
map does not hold yet, and entering rows in it.

A survey first counts the rows that reach the call, in one scan that reads no input. When the
map is *complete* it also settles that nothing needs to run: a pass over every row of the table
(no narrowing condition) that entered all of them marks the map with the xmin horizon of its
snapshot (a marker entry at tid (0,0)). Every tuple version live later whose xmin is older than
the horizon was committed before that snapshot, so that pass read it and its entry exists; a
survey that finds no row at or past the horizon, in the same relfilenode, needs no input query
at all. Otherwise the input query reads the rows without a valid entry (an anti-join).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import numpy as np

from planner.calls import CallSite
from planner.install import quote_ident
from planner.model_spec import ModelSpec
from planner.outcome import SessionPort
from planner.row_maps import MapTarget, RowMap, filenode_sql, match_sql
from planner.send_forms import send_sql

# Each input row's identity as the input query sends it: table oid, relfilenode, tid, xmin.
IDENTITY = np.dtype(
    [("rel", ">u4"), ("filenode", ">u4"), ("block", ">u4"), ("offset", ">u2"), ("xid", ">u4")]
)
MARKER_TID = (0, 0)  # no tuple lives at (0,0): line pointers start at 1
MARKER_ORDINAL = -2
MAX_MARKER_AGE = 1 << 30  # a horizon this old (or wrapped around) vouches for nothing


@dataclass(frozen=True)
class Survey:
    reaching: int  # rows that reach the call with non-NULL arguments
    horizon: int  # xmin of the survey's snapshot (32 bits): what a complete pass marks
    filenode: int
    vouched: bool  # the marker vouches for every row that reaches the call


@dataclass
class MapRows:
    """Rows of a chunk to enter in the map, with their place in the chunk."""

    tids: list[tuple[int, int]]
    xids: list[int]
    digests: list[bytes]
    positions: np.ndarray

    def take(self, index: list[int]) -> MapRows:
        return MapRows(
            [self.tids[i] for i in index],
            [self.xids[i] for i in index],
            [self.digests[i] for i in index],
            self.positions[index] if len(self.positions) else self.positions,
        )

    def split(self, cut: int) -> tuple[MapRows, MapRows]:
        k = int(np.searchsorted(self.positions, cut))
        head = MapRows(self.tids[:k], self.xids[:k], self.digests[:k], self.positions[:k])
        return head, MapRows(self.tids[k:], self.xids[k:], self.digests[k:], self.positions[k:])

    @classmethod
    def concat(cls, parts: list[MapRows]) -> MapRows:
        return cls(
            [t for p in parts for t in p.tids],
            [x for p in parts for x in p.xids],
            [d for p in parts for d in p.digests],
            np.zeros(0, dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.tids)


# -- surveying ----------------------------------------------------------------------------------


async def survey(db: asyncpg.Pool, port: SessionPort, site: CallSite, target: MapTarget) -> Survey:
    """Count the rows reaching the call, in the client's session; check the map's marker."""
    marker = await db.fetchrow(
        _MARKER.format(table=target.rowmap.table), MARKER_TID, MARKER_ORDINAL, target.rowmap.relid
    )
    source, where = _source(site, target)
    horizon = (
        "(SELECT (pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::int8 % 4294967296))"
    )
    columns = ["pg_catalog.count(*)", horizon, f"{filenode_sql(target.rowmap.relid)}::int8"]
    if marker is not None:
        age = f"(SELECT pg_catalog.age('{int(marker['xid'])}'::pg_catalog.xid))"
        t = quote_ident(target.alias)
        columns += [f"pg_catalog.count(*) FILTER (WHERE pg_catalog.age({t}.xmin) <= {age})", f"{age}::int8"]
    sql = f"{site.with_sql} SELECT {', '.join(columns)} FROM {source} WHERE {where}".lstrip()
    row = (await port.fetch(sql))[0]
    vouched = (
        marker is not None and row[2] == marker["filenode"] and 0 <= row[4] <= MAX_MARKER_AGE and row[3] == 0
    )
    return Survey(reaching=row[0], horizon=row[1], filenode=row[2], vouched=vouched)


_MARKER = (
    "SELECT filenode::pg_catalog.int8 AS filenode, xid::pg_catalog.text::pg_catalog.int8 AS xid "
    "FROM {table} WHERE tid = $1::pg_catalog.tid AND ordinal = $2 "
    "AND filenode = pg_catalog.pg_relation_filenode($3::pg_catalog.oid)"
)


async def mark_complete(db: asyncpg.Pool, rowmap: RowMap, found: Survey) -> None:
    """Mark the map complete up to the survey's horizon (see the module's docstring)."""
    await db.execute(
        f"INSERT INTO {rowmap.table} (filenode, tid, xid, ordinal) VALUES ($1, $2::pg_catalog.tid, "
        "$3::pg_catalog.text::pg_catalog.xid, $4) "
        "ON CONFLICT (tid, filenode, ordinal) DO UPDATE SET xid = EXCLUDED.xid",
        found.filenode,
        MARKER_TID,
        str(found.horizon),
        MARKER_ORDINAL,
    )


# -- the input query ----------------------------------------------------------------------------


def _source(site: CallSite, target: MapTarget) -> tuple[str, str]:
    """The table by its catalog name under the call's alias, and the rows that reach the call."""
    t = quote_ident(target.alias)
    source = f"{quote_ident(target.schema)}.{quote_ident(target.name)} AS {t}"
    where = [f"({site.where_sql})"] if site.where_sql else []
    # STRICT: a NULL argument gives NULL without the model; such rows need no entry
    where += [f"{t}.{quote_ident(c)} IS NOT NULL" for c in target.rowmap.key.columns]
    return source, " AND ".join(where)


def input_sql(site: CallSite, spec: ModelSpec, target: MapTarget) -> str:
    """The site's rows that the map does not hold yet: (identity, send forms of the arguments)."""
    t = quote_ident(target.alias)
    rel = target.rowmap.relid
    source, where = _source(site, target)
    identity = (
        f"pg_catalog.oidsend({t}.tableoid) || pg_catalog.oidsend({filenode_sql(rel)}) || "
        f"pg_catalog.tidsend({t}.ctid) || pg_catalog.xidsend({t}.xmin)"
    )
    columns = [f"{t}.{quote_ident(c)}" for c in target.rowmap.key.columns]
    sends = ", ".join(send_sql(arg_type, c) for (_, arg_type), c in zip(spec.args, columns, strict=True))
    held = match_sql("sieve_map", target.alias, rel)
    where += f" AND NOT EXISTS (SELECT 1 FROM {target.rowmap.table} sieve_map WHERE {held})"
    return f"{site.with_sql} SELECT {identity}, {sends} FROM {source} WHERE {where}".lstrip()


def read_identities(raw: list[bytes], relid: int) -> tuple[np.ndarray, np.ndarray]:
    """The identities of a chunk's rows, and which of them may get map entries (rows of the
    verified table: the query names it by schema, so this only fails for a catalog change)."""
    ids = np.frombuffer(b"".join(raw), dtype=IDENTITY)
    return ids, ids["rel"] == relid


def map_rows(ids: np.ndarray, keep: np.ndarray, digests: list[bytes]) -> MapRows:
    positions = np.flatnonzero(keep)
    chosen = ids[positions]
    tids = list(zip(chosen["block"].tolist(), chosen["offset"].tolist(), strict=True))
    return MapRows(tids, chosen["xid"].tolist(), [digests[i] for i in positions.tolist()], positions)


# -- entering rows ------------------------------------------------------------------------------


async def write(
    conn: asyncpg.Connection, spec: ModelSpec, rowmap: RowMap, filenode: int, rows: MapRows, values: dict
) -> int:
    """Enter a batch's rows; returns how many were entered. A row's output is the one in
    ``values`` (digest -> output, just computed) or else the cache's under SieveDB's own digest
    (a row whose output is in neither, as after a concurrent sieve.clear_cache, gets no entry).
    An entry of an older tuple version at the same tid is replaced. Keys go in in order, so
    writers of overlapping rows wait for each other instead of deadlocking."""
    known = [i for i, d in enumerate(rows.digests) if d in values]
    entered = 0
    if known:
        part = rows.take(known)
        args = [part.tids, part.xids, [values[d] for d in part.digests]]
        entered += _count(await conn.execute(_insert_values(spec, rowmap), filenode, *args))
    if len(known) < len(rows):
        part = rows.take(sorted(set(range(len(rows))) - set(known)))
        args = [part.tids, part.xids, part.digests]
        entered += _count(await conn.execute(_insert_cached(spec, rowmap), filenode, *args))
    return entered


def _count(status: str) -> int:
    return int(status.split()[-1])  # INSERT 0 <rows>


def _insert_values(spec: ModelSpec, rowmap: RowMap) -> str:
    (column,), sql_type = rowmap.columns, spec.bindings[0].sql_type.sql
    return (
        f"INSERT INTO {rowmap.table} (filenode, tid, xid, ordinal, {quote_ident(column)}) "
        "SELECT $1::pg_catalog.oid, r.tid, r.xid, 0, r.v "
        "FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.tid[]), pg_catalog.unnest($3::pg_catalog.xid[]), "
        f"pg_catalog.unnest($4::{sql_type}[])) AS r(tid, xid, v) "
        f"ORDER BY r.tid {_UPSERT} {quote_ident(column)} = EXCLUDED.{quote_ident(column)}"
    )


def _insert_cached(spec: ModelSpec, rowmap: RowMap) -> str:
    cols = [quote_ident(c) for c in rowmap.columns]
    return (
        f"INSERT INTO {rowmap.table} (filenode, tid, xid, ordinal, {', '.join(cols)}) "
        f"SELECT $1::pg_catalog.oid, r.tid, r.xid, c.ordinal, {', '.join(f'c.{c}' for c in cols)} "
        "FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.tid[]), pg_catalog.unnest($3::pg_catalog.xid[]), "
        "pg_catalog.unnest($4::pg_catalog.bytea[])) AS r(tid, xid, digest) "
        f"JOIN {spec.cache_table} c ON c.digest = r.digest AND c.ordinal = 0 "
        f"ORDER BY r.tid {_UPSERT} " + ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
    )


_UPSERT = "ON CONFLICT (tid, filenode, ordinal) DO UPDATE SET xid = EXCLUDED.xid,"
