"""Running a model over the inputs a call site can reach, and writing the outputs to its cache."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import numpy as np

from inference.errors import InferenceError, InferenceLayerError
from inference.model import ModelRef
from inference.preprocess import apply_post_ops, find_undecodable
from planner import send_forms
from planner.calls import CallSite
from planner.install import digest_sql, quote_ident
from planner.model_spec import ModelSpec
from planner.outcome import PlanError, SessionPort

log = logging.getLogger("sievedb.planner.materialize")

BATCH_ROWS = 1024
ANALYZE_AFTER_ROWS = 10_000
FIRST_BATCH_ROWS = 64  # LIMIT queries start small and double: stop as soon as the answer is whole
NOTICE_EVERY_S = 3.0
INVALID_PARAMETER = "22023"
INVALID_BINARY_REPRESENTATION = "22P03"
_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "int32": np.int32,
    "int64": np.int64,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
    "float16": np.float16,
}


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

    def add(self, model: str, runs: int, hits: int) -> None:
        self.model_calls[model] = self.model_calls.get(model, 0) + runs
        self.cache_hits += hits


def model_ref(spec: ModelSpec) -> ModelRef:
    outputs = tuple(dict.fromkeys(b.output for b in spec.bindings))
    if spec.row_index:
        first = spec.signature["outputs"][0]["name"]
        outputs = (first, *[o for o in outputs if o != first])
    return ModelRef(
        key=spec.key,
        path=spec.path,
        preprocess=spec.preprocess() or None,
        outputs=outputs,
        split="row_index" if spec.row_index else "rows",
    )


async def materialize_site(
    site: CallSite,
    spec: ModelSpec,
    dbs: Databases,
    pool,
    port: SessionPort,
    result: Materialized,
    enough: Callable[[list], Awaitable[bool]] | None = None,
) -> bool:
    """Run the model over the call site's uncached inputs. With ``enough`` (LIMIT queries),
    batches grow from FIRST_BATCH_ROWS and the work stops as soon as ``enough(keys)`` says so;
    ``keys`` are the row keys (ctid text) of the rows whose outputs are now cached when the site
    has one (``site.row_key``), else the digests just materialized. True when stopped early."""
    keyed = enough is not None and site.row_key is not None
    query = site.input_query(
        digest_sql(spec, list(site.args)), [t for _, t in spec.args], spec.cache_table, keyed
    )
    work = _Work(site, spec, dbs, pool, port, enough, keyed)
    try:
        # The inputs stream through the client's own session: its role, database and snapshot.
        async with port.stream(query, chunk_rows=BATCH_ROWS) as chunks:
            await work.consume_all(_decoded(chunks, spec))
    except InferenceLayerError as exc:
        raise PlanError("XX000", f"model {spec.name} failed: {exc}") from None
    runs, hits = work.runs, work.hits
    stopped = work.stopped
    if runs >= ANALYZE_AFTER_ROWS:  # fresh statistics keep the next input query's plan right
        await dbs.write.execute(f"ANALYZE {spec.cache_table}")
    log.info(
        "materialized model=%s runs=%d cache_hits=%d ms=%.1f",
        spec.key,
        runs,
        hits,
        1000 * (time.monotonic() - work.started),
    )
    result.add(spec.name, runs, hits)
    return stopped


class _Work:
    """One call site's pass over its input rows: dedupe, count hits, run batches."""

    def __init__(self, site, spec, dbs, pool, port, enough, keyed: bool = False) -> None:
        self.site, self.spec, self.dbs = site, spec, dbs
        self.pool, self.port, self.enough = pool, port, enough
        self.seen: set = set()
        self.hits = self.runs = 0
        self.total: int | None = None
        self.size = FIRST_BATCH_ROWS if enough is not None else BATCH_ROWS
        self.started = self.last_notice = time.monotonic()
        self.batch: list = []
        self.keyed = keyed
        self.rows: list[str] = []  # keyed: keys of rows with cached outputs, not yet checked
        self.waiting: list[str] = []  # keyed: keys of rows whose input is in the running batch
        self.in_batch: set = set()
        self.stopped = False

    async def consume_all(self, records) -> None:
        """``records``: a list of input rows, or an async iterator of lists of them."""
        if isinstance(records, list):
            stopped = await self._take_all(records)
        else:
            stopped = False
            async for chunk in records:
                if await self._take_all(chunk):
                    stopped = True
                    break
        if stopped:
            self.stopped = True
            return
        if self.batch:  # the input set is exhausted: every input it holds is now cached
            await self._run()

    async def _take_all(self, records: list) -> bool:
        seen = self.seen
        for record in records:
            if record[1] and not self.keyed:  # a cached input: counted once, nothing to run
                if record[0] not in seen:
                    seen.add(record[0])
                    self.hits += 1
            elif await self._take(record):
                return True
        return False

    def _keys(self, digests: list) -> list:
        if not self.keyed:
            return digests
        keys, self.rows = self.rows, []
        return keys

    async def _take(self, record) -> bool:
        """Add one input row; True once the caller's ``enough`` says to stop."""
        digest = record[0]
        if digest in self.seen:
            if self.keyed:  # the same input again: checkable once its output is cached
                (self.waiting if digest in self.in_batch else self.rows).append(record[-1])
            return False
        self.seen.add(digest)
        if record[1]:
            if self.keyed:
                self.rows.append(record[-1])
            self.hits += 1
            if self.keyed and len(self.rows) >= self.size:  # cached rows may answer on their own
                return await self.enough(self._keys([]))
            return False
        self.batch.append(record)
        if self.keyed:
            self.in_batch.add(digest)
        if len(self.batch) < self.size:
            return False
        digests = await self._run()
        if self.enough is not None and await self.enough(self._keys(digests)):
            return True
        self.size = min(self.size * 2, BATCH_ROWS)
        await self._report()
        return False

    async def _run(self) -> list:
        batch, self.batch = self.batch, []
        await self.port.arm_statement_timeout()
        self.runs += await _run_batch(self.spec, batch, self.dbs.write, self.pool)
        if self.keyed:  # only rows whose outputs are cached now may be checked (lenient reads)
            self.rows += [r[-1] for r in batch] + self.waiting
            self.waiting, self.in_batch = [], set()
        return [r[0] for r in batch]

    async def _report(self) -> None:
        if time.monotonic() - self.last_notice <= NOTICE_EVERY_S:
            return
        self.last_notice = time.monotonic()
        if self.total is None:  # counted once, when the work turns out to be long
            pending = await self.port.fetch(pending_inputs_sql(self.site, self.spec))
            self.total = self.runs + pending[0][0]
        self.port.notice(_progress(self.spec, self.runs, self.total, self.last_notice - self.started))


async def _decoded(chunks, spec: ModelSpec):
    """Input rows with the arguments of uncached inputs decoded from their send forms, keyed
    by the digest SieveDB computes from those bytes (see planner.send_forms)."""
    names = [name for name, _ in spec.args]
    types = [t for _, t in spec.args]
    width = len(types)
    async for rows in chunks:
        decoded = []
        for row in rows:
            if row[1]:  # cached: no arguments were sent
                decoded.append(row)
                continue
            raw = row[2 : 2 + width]
            digest = send_forms.digest_of(list(raw))
            try:
                values = tuple(
                    send_forms.decode(t, r, spec.name, n) for t, r, n in zip(types, raw, names, strict=True)
                )
            except PlanError as exc:  # name the input, as every data error of a batch does
                where = _input_label(spec, (digest, False, *raw, *row[2 + width :]))
                raise PlanError(exc.sqlstate, f"{exc} ({where})", hint=exc.hint) from None
            decoded.append((digest, False, *values, *row[2 + width :]))
        yield decoded


def pending_inputs_sql(site: CallSite, spec: ModelSpec) -> str:
    """Distinct inputs reaching the call: (still to run, already cached)."""
    inputs = site.input_query(digest_sql(spec, list(site.args)), [t for _, t in spec.args], spec.cache_table)
    return (
        "SELECT count(*) FILTER (WHERE NOT hit), count(*) FILTER (WHERE hit) FROM "
        f"(SELECT DISTINCT ON (sieve_digest) sieve_digest, hit FROM ({inputs}) AS i) AS d"
    )


def _progress(spec: ModelSpec, done: int, total: int, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 else float("nan")
    return f"model {spec.name}: {done:,} of {total:,} inputs run ({rate:,.0f}/s, about {left:,.0f} s left)"


async def _run_batch(spec: ModelSpec, batch: list, db: asyncpg.Pool, pool) -> int:
    """Run the model over a batch of input rows (digest, hit, *args[, row key]) and cache the
    outputs; returns how many inputs the model ran on.

    Other sessions, here or on other servers sharing the Postgres, may reach the same inputs at
    the same time. The batch claims its digests with transaction-level advisory locks, always
    taken in one order (so no two batches wait on each other in a cycle), runs the model only on
    the inputs no other batch cached meanwhile, writes, and commits, which frees the claims: a
    second session waits for the first one's outputs instead of computing them again."""
    batch = sorted(batch, key=lambda r: bytes(r[0]))
    digests = [bytes(r[0]) for r in batch]
    async with db.acquire() as writer, writer.transaction():
        await writer.execute(_CLAIM, spec.id, sorted({_lock_key(d) for d in digests}))
        done = await writer.fetch(
            f"SELECT DISTINCT digest FROM {spec.cache_table} WHERE digest = ANY($1::bytea[])", digests
        )
        if done:
            cached = {bytes(r[0]) for r in done}
            batch = [r for r, d in zip(batch, digests, strict=True) if d not in cached]
        if not batch:
            return 0
        _check_images(spec, batch, full=False)  # headers only: cheap, and names a bad input
        inputs = {}
        for i, info in enumerate(spec.signature["inputs"]):
            inputs[info["name"]] = _tensor([r[2 + i] for r in batch], spec, i, info)
        try:
            outputs = await pool.infer(model_ref(spec), inputs)
        except InferenceError:
            await _explain_bad_images(spec, batch)  # a data error, when an image is the cause
            raise
        await _write_cache(spec, _cache_rows(spec, [r[0] for r in batch], outputs), writer)
    return len(batch)


# Claims (model id, first 4 bytes of the digest) in ascending order: the ORDER BY sits in a
# subquery Postgres keeps whole, whose rows the aggregate takes, and locks, one by one in order.
_CLAIM = (
    "SELECT count(pg_advisory_xact_lock($1::int4, k)) "
    "FROM (SELECT k FROM unnest($2::int4[]) AS k ORDER BY k OFFSET 0) AS claims"
)


def _lock_key(digest: bytes) -> int:
    return int.from_bytes(digest[:4], "big", signed=True)


def _input_label(spec: ModelSpec, row) -> str:
    """How an error names one input: its digest, and the row it came from when known."""
    label = f"input {bytes(row[0]).hex()}"
    if len(row) > 2 + len(spec.args) and row[2 + len(spec.args)] is not None:
        label += f", row {row[2 + len(spec.args)]}"
    return label


def _image_inputs(spec: ModelSpec) -> list[tuple[int, str, dict]]:
    return [
        (i, name, opts)
        for i, (name, _) in enumerate(spec.args)
        if isinstance(opts := spec.options.get(name), dict) and opts.get("decode") == "image"
    ]


def _check_images(spec: ModelSpec, batch: list, full: bool) -> None:
    for i, name, opts in _image_inputs(spec):
        bad = find_undecodable([r[2 + i] for r in batch], opts, full=full)
        if bad is not None:
            row, why = bad
            raise PlanError(
                INVALID_BINARY_REPRESENTATION,
                f'model {spec.name}: argument "{name}" of {_input_label(spec, batch[row])} '
                f"is not a decodable image: {why}",
            )


async def _explain_bad_images(spec: ModelSpec, batch: list) -> None:
    """After a failed batch: raise the data error naming the first image that cannot be decoded,
    if one is the cause (decoding every image again, in a thread, only on this path)."""
    if _image_inputs(spec):
        await asyncio.to_thread(_check_images, spec, batch, True)


def _tensor(values: list, spec: ModelSpec, index: int, info: dict) -> np.ndarray:
    """One model input for a batch (NULL array elements never get here: see send_forms)."""
    name, sql_type = spec.args[index]
    shape = info["shape"]
    if sql_type.base in ("bytea", "text"):
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr.reshape(-1, 1) if sql_type.base == "text" and shape and len(shape) == 2 else arr
    dtype = _DTYPES.get(info["elem"], np.float32)
    try:
        arr = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError):
        raise PlanError(
            INVALID_PARAMETER,
            f'argument "{name}" of model {spec.name}: arrays of different lengths cannot form one tensor',
        ) from None
    if not sql_type.is_array and shape is not None and len(shape) == 2:
        arr = arr.reshape(-1, 1)
    if sql_type.is_array and arr.ndim != 2:
        raise PlanError(INVALID_PARAMETER, f'argument "{name}" of model {spec.name} must be a 1-D array')
    if sql_type.is_array and shape and isinstance(shape[1], int) and arr.shape[1] != shape[1]:
        raise PlanError(
            INVALID_PARAMETER,
            f'argument "{name}" of model {spec.name} has {arr.shape[1]} elements; the model takes {shape[1]}',
        )
    return arr


def _cache_rows(spec: ModelSpec, digests: list, outputs: dict) -> list[tuple]:
    columns = [_column_values(b, outputs) for b in spec.bindings]
    if not spec.row_index:
        return [(d, 0, *(col[i] for col in columns)) for i, d in enumerate(digests)]
    index = np.asarray(outputs[spec.signature["outputs"][0]["name"]])
    owners = index[:, 0] if index.ndim == 2 else index
    rows, ordinals = [], {}
    for m, owner in enumerate(owners.astype(int)):
        ordinal = ordinals.get(owner, 0)
        ordinals[owner] = ordinal + 1
        rows.append((digests[owner], ordinal, *(col[m] for col in columns)))
    empty = (None,) * len(columns)
    rows += [(d, -1, *empty) for i, d in enumerate(digests) if i not in ordinals]
    return rows


def _column_values(binding, outputs: dict) -> list:
    arr = np.asarray(outputs[binding.output])
    if binding.post:
        arr = apply_post_ops(arr, list(binding.post))
    sql_type = binding.sql_type
    if sql_type.is_array:
        return [list(map(float, row)) for row in arr.reshape(len(arr), -1)]
    flat = arr.reshape(len(arr), -1)[:, 0] if arr.ndim > 1 else arr
    if sql_type.base == "text":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in flat.tolist()]
    if sql_type.base == "bool":
        return [bool(v) for v in flat.tolist()]
    if sql_type.base in ("int2", "int4", "int8"):
        return [int(v) for v in flat.tolist()]
    return [float(v) for v in flat.tolist()]


async def _write_cache(spec: ModelSpec, rows: list[tuple], writer: asyncpg.Connection) -> None:
    """Add a batch's outputs to the cache, inside the caller's transaction. Rows go in in key
    order, so that writers whose batches overlap (none should: see _run_batch) lock index
    entries in one order and cannot deadlock."""
    columns = ["digest", "ordinal", *[b.column for b in spec.bindings]]
    stage = quote_ident(spec.stage_table)
    await writer.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {spec.cache_table}) ON COMMIT DELETE ROWS"
    )
    await writer.copy_records_to_table(spec.stage_table, records=rows, columns=columns)
    await writer.execute(
        f"INSERT INTO {spec.cache_table} SELECT * FROM {stage} ORDER BY digest, ordinal "
        "ON CONFLICT DO NOTHING"
    )
