"""Running a model over the inputs a call site can reach, and writing the outputs to its cache.

The input rows are read in the client's own session (its role, database and snapshot). Each
chunk is decoded column by column (planner.send_forms: one numpy pass per chunk), its new inputs
gather into batches of BATCH_ROWS, and each batch runs in a task of its own (planner.batches:
claims, the model, COPY into the cache) while the next chunks are read, so that Postgres
reading, the model and Postgres writing overlap (planner.site_pass).

A call that reads plain columns of one table, in a statement whose outputs planner.read_outputs
reads back by row identity, also keeps a row map (planner.row_maps): a survey tells whether any
row needs work at all, the rows without an entry are read block range by block range (one value
per range, the next range read while this one is fed: planner.map_pass), SieveDB digests their
send forms itself, and each batch enters its rows in the map: those whose outputs it computed
in its own transaction, the others once the batches before it are done.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import asyncpg
from pglast import ast

from inference.errors import InferenceLayerError
from planner import map_pass, row_maps
from planner.batches import model_ref
from planner.calls import CallSite
from planner.install import digest_sql
from planner.labels.requests import request_labels
from planner.model_spec import ModelSpec
from planner.outcome import PlanError, SessionPort
from planner.row_maps import MapKey, MapTarget, RowMap
from planner.site_pass import BATCH_ROWS, SitePass

__all__ = ["BATCH_ROWS", "Databases", "Materialized", "materialize_site", "model_ref", "pending_inputs_sql"]

log = logging.getLogger("sievedb.planner.materialize")


CHUNK_ROWS = 4096  # input rows per Execute of the input query
ANALYZE_AFTER_ROWS = 10_000


@dataclass(frozen=True)
class Databases:
    """Readers stream inputs while writers store outputs: separate pools, so that many
    concurrent materializations holding readers can never starve the writers (a deadlock)."""

    read: asyncpg.Pool
    write: asyncpg.Pool


@dataclass
class Materialized:
    model_calls: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    maps_wanted: frozenset[MapKey] = frozenset()  # calls the final statement reads by row identity
    maps: dict[MapKey, RowMap] = field(default_factory=dict)  # the row maps made ready for it

    def add(self, model: str, runs: int, hits: int) -> None:
        self.model_calls[model] = self.model_calls.get(model, 0) + runs
        self.cache_hits += hits


async def materialize_site(
    site: CallSite, spec: ModelSpec, dbs: Databases, pool, port: SessionPort, result: Materialized
) -> None:
    """Run the model over the call site's inputs that have no cached output yet."""
    if spec.is_labels:  # people, not a model, give its outputs: ask them (planner/labels)
        await request_labels(site, spec, dbs, port, result)
        return
    target = found = None
    key = _wanted_key(site, result)
    if key is not None:
        async with port.batch():  # the map's checks and survey: one exchange with Postgres
            target = await _map_target(key, spec, dbs, port, result)
            found = await map_pass.survey(port, site, target) if target is not None else None
    work = SitePass(spec, dbs.write, pool, port, target)
    work.survey = found
    try:
        if target is None:
            query = site.input_query(
                digest_sql(spec, list(site.args)), [t for _, t in spec.args], spec.cache_table
            )
            work.total_sql = pending_inputs_sql(site, spec)
            async with port.stream(query, chunk_rows=CHUNK_ROWS) as chunks:
                async for rows in chunks:
                    await work.feed(rows)
        elif not found.vouched:
            await work.read_ranges(map_pass.range_sql(site, spec, target))
        await work.finish()
        if work.completes_map(site):
            await map_pass.mark_complete(dbs.write, target.rowmap, work.survey)
    except InferenceLayerError as exc:
        await work.abort()
        raise PlanError("XX000", f"model {spec.name} failed: {exc}") from None
    except BaseException:
        await work.abort()
        raise
    await _analyze(dbs.write, spec, work)
    log.info(
        "materialized model=%s runs=%d cache_hits=%d mapped=%d ms=%.1f",
        spec.key, work.runs, work.hits, work.mapped, 1000 * (time.monotonic() - work.started),
    )  # fmt: skip
    result.add(spec.name, work.runs, work.hits)


def _wanted_key(site: CallSite, result: Materialized) -> tuple[MapKey, ast.RangeVar] | None:
    """The site's map key, when the final statement reads the call by row identity."""
    found = row_maps.site_key(site) if result.maps_wanted else None
    return found if found is not None and found[0] in result.maps_wanted else None


async def _map_target(
    key: tuple[MapKey, ast.RangeVar], spec: ModelSpec, dbs: Databases, port: SessionPort, result: Materialized
) -> MapTarget | None:
    """The row map this site keeps, when the call qualifies (row_maps.verify)."""
    target = await row_maps.verify(port, spec, *key)
    if target is not None:
        await row_maps.ensure_table(dbs.write, spec, target)
        result.maps[key[0]] = target.rowmap
    return target


async def _analyze(db: asyncpg.Pool, spec: ModelSpec, work: SitePass) -> None:
    """Fresh statistics keep the plans of the next input queries and reads right."""
    if work.runs >= ANALYZE_AFTER_ROWS:
        await db.execute(f"ANALYZE {spec.cache_table}")
    if work.target is not None and work.mapped >= ANALYZE_AFTER_ROWS:
        # many new entries: maybe the table was rewritten; entries of its old files go
        await db.execute(f"DELETE FROM {work.target.rowmap.table} WHERE filenode <> $1", work.filenode)
        await db.execute(f"ANALYZE {work.target.rowmap.table}")


def pending_inputs_sql(site: CallSite, spec: ModelSpec) -> str:
    """Distinct inputs reaching the call: (still to run, already cached)."""
    inputs = site.input_query(digest_sql(spec, list(site.args)), [t for _, t in spec.args], spec.cache_table)
    return (
        "SELECT count(*) FILTER (WHERE NOT hit), count(*) FILTER (WHERE hit) FROM "
        f"(SELECT DISTINCT ON (sieve_digest) sieve_digest, hit FROM ({inputs}) AS i) AS d"
    )
