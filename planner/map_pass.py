"""A call site's pass over its table when it keeps a row map (planner.row_maps): which rows the
map does not hold yet, and entering rows in it.

A survey first counts the rows that reach the call, in one scan that reads no input. When the
map is *complete* it also settles that nothing needs to run: a pass over every row of the table
(no narrowing condition) that entered all of them marks the map with the xmin horizon of its
snapshot (a marker entry at tid (0,0)). Every tuple version live later whose xmin is older than
the horizon was committed before that snapshot, so that pass read it and its entry exists; a
survey that finds no row at or past the horizon, in the same relfilenode, needs no input query.

Otherwise the rows without a valid entry are read block range by block range (a TID range scan
and an anti-join each), every range as one value: the rows' identities and send forms one after
the other, which numpy splits in one pass, instead of one protocol message (and one decode in
Python) per row. The last range is open-ended, so rows the table grew by since the survey count.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import numpy as np

from planner import send_forms
from planner.calls import CallSite
from planner.install import quote_ident
from planner.model_spec import ModelSpec
from planner.outcome import SessionPort
from planner.row_maps import MapTarget, RowMap, filenode_sql, match_sql
from planner.send_forms import send_sql

# Each input row's identity as the input query sends it: tid, xmin.
IDENTITY = np.dtype([("block", ">u4"), ("offset", ">u2"), ("xid", ">u4")])
MARKER_TID = (0, 0)  # no tuple lives at (0,0): line pointers start at 1
MARKER_ORDINAL = -2
MAX_MARKER_AGE = 1 << 30  # a horizon this old (or wrapped around) vouches for nothing
RANGE_ROWS = 4096  # rows a block range is sized for
END_TID = "(4294967295,65535)"  # past every tid: the open end of the last range
_INT = struct.Struct("!i")


@dataclass(frozen=True)
class Survey:
    reaching: int  # rows that reach the call with non-NULL arguments
    horizon: int  # xmin of the survey's snapshot (32 bits): what a complete pass marks
    filenode: int
    blocks: int  # the table's size in blocks
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


async def survey(port: SessionPort, site: CallSite, target: MapTarget) -> Survey:
    """Count the rows reaching the call and the table's blocks, in the client's session, and
    check the map's marker (the marker of the table's current relfilenode, if any)."""
    source, where = _source(site, target)
    relid, t = target.rowmap.relid, quote_ident(target.alias)
    marker_age = (
        f"(SELECT pg_catalog.age(m.xid)::pg_catalog.int8 FROM {target.rowmap.table} m "
        f"WHERE m.tid = '(0,0)'::pg_catalog.tid AND m.ordinal = {MARKER_ORDINAL} "
        f"AND m.filenode = {filenode_sql(relid)})"
    )
    columns = [
        "pg_catalog.count(*)",
        "(SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::int8 % 4294967296)",
        f"{filenode_sql(relid)}::pg_catalog.int8",
        f"(SELECT pg_catalog.pg_relation_size({relid}::pg_catalog.regclass) "
        "/ pg_catalog.current_setting('block_size')::pg_catalog.int8)",
        f"pg_catalog.count(*) FILTER (WHERE pg_catalog.age({t}.xmin) <= {marker_age})",
        marker_age,
    ]
    sql = f"{site.with_sql} SELECT {', '.join(columns)} FROM {source} WHERE {where}".lstrip()
    reaching, horizon, filenode, blocks, newer, age = (await port.fetch(sql))[0]
    vouched = age is not None and 0 <= age <= MAX_MARKER_AGE and newer == 0
    return Survey(reaching, horizon, filenode, blocks, vouched)


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


def range_sql(site: CallSite, spec: ModelSpec, target: MapTarget) -> str:
    """The rows of blocks [$1, $2) (tids) that the map does not hold yet, as (one bytea, row
    count, lowest and highest tableoid, relfilenode): per row its identity (IDENTITY), then per
    argument the send form's length (4 bytes) and the send form."""
    t = quote_ident(target.alias)
    rel = target.rowmap.relid
    source, where = _source(site, target)
    columns = [f"{t}.{quote_ident(c)}" for c in target.rowmap.key.columns]
    sends = [send_sql(arg_type, c) for (_, arg_type), c in zip(spec.args, columns, strict=True)]
    inner = ", ".join(
        [
            f"{t}.tableoid AS r",
            f"pg_catalog.tidsend({t}.ctid) || pg_catalog.xidsend({t}.xmin) AS i",
            *(f"{e} AS s{k}" for k, e in enumerate(sends)),
        ]
    )
    record = " || ".join(
        [
            "q.i",
            *(f"pg_catalog.int4send(pg_catalog.octet_length(q.s{k})) || q.s{k}" for k in range(len(sends))),
        ]
    )
    span = "{c} >= $1::pg_catalog.tid AND {c} < $2::pg_catalog.tid"
    held = f"{match_sql('sieve_map', target.alias, rel)} AND {span.format(c='sieve_map.tid')}"
    where += f" AND {span.format(c=f'{t}.ctid')}"
    where += f" AND NOT EXISTS (SELECT 1 FROM {target.rowmap.table} sieve_map WHERE {held})"
    # OFFSET 0: each send form is computed once, not once per reference
    return (
        f"{site.with_sql} SELECT pg_catalog.string_agg({record}, ''::pg_catalog.bytea), pg_catalog.count(*), "
        f"pg_catalog.min(q.r)::pg_catalog.int8, pg_catalog.max(q.r)::pg_catalog.int8, "
        f"{filenode_sql(rel)}::pg_catalog.int8 "
        f"FROM (SELECT {inner} FROM {source} WHERE {where} OFFSET 0) AS q"
    ).lstrip()


def block_ranges(found: Survey) -> Iterator[tuple[str, str]]:
    """Bounds (tid text) of the block ranges to read, about RANGE_ROWS rows each; the last one
    is open-ended."""
    per_block = max(1.0, found.reaching / max(1, found.blocks))
    size, lo = max(1, int(RANGE_ROWS / per_block)), 0
    while lo + size < found.blocks:
        yield f"({lo},0)", f"({lo + size},0)"
        lo += size
    yield f"({lo},0)", END_TID


@dataclass
class RangeRows:
    """A block range's rows: identities, each argument's send forms (a uint8 block, one row of
    one length each, or a list of bytes), SieveDB's digest of each row; and whether they are
    rows of the verified table (the query names it by its schema: only a catalog change between
    the checks can make it another one) in which relfilenode."""

    ids: np.ndarray
    sends: list[np.ndarray | list[bytes]]
    digests: list[bytes]
    verified: bool = True
    filenode: int | None = None


def parse_range(row: tuple, nargs: int, relid: int) -> RangeRows:
    """One row of range_sql."""
    blob, count, low, high, filenode = row
    if not count:
        return RangeRows(np.zeros(0, dtype=IDENTITY), [[] for _ in range(nargs)], [])
    fixed = _fixed_layout(blob, count, nargs)
    rows = _parse_fixed(blob, count, fixed) if fixed is not None else _parse_each(blob, count, nargs)
    rows.verified, rows.filenode = low == high == relid, filenode
    return rows


def _fixed_layout(blob: bytes, count: int, nargs: int) -> list[int] | None:
    """The send forms' lengths when every row has the first row's, else None."""
    pos, lengths = IDENTITY.itemsize, []
    for _ in range(nargs):
        (n,) = _INT.unpack_from(blob, pos)
        lengths.append(n)
        pos += 4 + n
    if pos * count != len(blob):
        return None
    rows = np.frombuffer(blob, dtype=np.uint8).reshape(count, pos)
    start = IDENTITY.itemsize
    for n in lengths:
        if not (rows[:, start : start + 4] == rows[0, start : start + 4]).all():
            return None
        start += 4 + n
    return lengths


def _parse_fixed(blob: bytes, count: int, lengths: list[int]) -> RangeRows:
    width = IDENTITY.itemsize + sum(4 + n for n in lengths)
    rows = np.frombuffer(blob, dtype=np.uint8).reshape(count, width)
    ids = np.ascontiguousarray(rows[:, : IDENTITY.itemsize]).view(IDENTITY).reshape(-1)
    sends, start = [], IDENTITY.itemsize
    for n in lengths:
        sends.append(rows[:, start + 4 : start + 4 + n])
        start += 4 + n
    view, sha256 = memoryview(blob), hashlib.sha256
    # digest_of: one argument is hashed bare, several with their lengths (as they lie here)
    first, size = (
        (IDENTITY.itemsize + 4, lengths[0])
        if len(lengths) == 1
        else (IDENTITY.itemsize, width - IDENTITY.itemsize)
    )
    digests = [sha256(view[o : o + size]).digest() for o in range(first, width * count, width)]
    return RangeRows(ids, sends, digests)


def _parse_each(blob: bytes, count: int, nargs: int) -> RangeRows:
    ids, sends, pos = [], [[] for _ in range(nargs)], 0
    for _ in range(count):
        ids.append(blob[pos : pos + IDENTITY.itemsize])
        pos += IDENTITY.itemsize
        for k in range(nargs):
            (n,) = _INT.unpack_from(blob, pos)
            sends[k].append(blob[pos + 4 : pos + 4 + n])
            pos += 4 + n
    identities = np.frombuffer(b"".join(ids), dtype=IDENTITY)
    return RangeRows(identities, sends, send_forms.digests_of(sends))


def map_rows(ids: np.ndarray, keep: np.ndarray, digests: list[bytes]) -> MapRows:
    positions = np.flatnonzero(keep)
    chosen = ids[positions]
    tids = list(zip(chosen["block"].tolist(), chosen["offset"].tolist(), strict=True))
    return MapRows(tids, chosen["xid"].tolist(), [digests[i] for i in positions.tolist()], positions)


# -- entering rows ------------------------------------------------------------------------------


async def write_known(
    conn: asyncpg.Connection, spec: ModelSpec, rowmap: RowMap, filenode: int, rows: MapRows, values: dict
) -> tuple[int, MapRows]:
    """Enter the rows whose outputs ``values`` holds (digest -> output, just computed); returns
    how many were entered and the other rows. An entry of an older tuple version at the same tid
    is replaced. Keys go in in order: writers of overlapping rows wait for each other in order
    instead of deadlocking."""
    known = [i for i, d in enumerate(rows.digests) if d in values]
    if not known:
        return 0, rows
    part = rows.take(known)
    args = [part.tids, part.xids, [values[d] for d in part.digests]]
    entered = _count(await conn.execute(_insert_values(spec, rowmap), filenode, *args))
    rest = sorted(set(range(len(rows))) - set(known))
    return entered, rows.take(rest)


async def write_cached(
    conn: asyncpg.Connection, spec: ModelSpec, rowmap: RowMap, filenode: int, rows: MapRows
) -> int:
    """Enter rows with the outputs the cache holds under SieveDB's own digest of their inputs (a
    row whose output is not there, as after a concurrent sieve.clear_cache, gets no entry)."""
    if not rows.tids:
        return 0
    args = [rows.tids, rows.xids, rows.digests]
    return _count(await conn.execute(_insert_cached(spec, rowmap), filenode, *args))


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
