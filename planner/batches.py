"""One batch of new inputs: claim them, run the model, COPY the outputs into the cache.

Other sessions, here or on other servers sharing the Postgres, may reach the same inputs at
the same time. A batch claims its digests with transaction-level advisory locks, always taken
in one order (so no two batches wait on each other in a cycle), runs the model only on the
inputs no other batch cached meanwhile, writes, and commits, which frees the claims: a second
session waits for the first one's outputs instead of computing them again. Since no other
writer can hold a claimed digest, the outputs go straight into the cache table by binary COPY.
A large batch may instead claim without waiting (``wait=False``): it runs the inputs whose
claims were free and hands the others back, for its pass to run after its other work
(planner.site_pass), so two front-ends on one model split the work instead of queueing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np

from inference.errors import InferenceError
from inference.model import ModelRef
from inference.preprocess import apply_post_ops, find_undecodable
from planner.model_spec import ModelSpec
from planner.outcome import PlanError
from planner.sqlstate import CARDINALITY_VIOLATION, INVALID_BINARY_REPRESENTATION, INVALID_PARAMETER

# Postgres's code for "more rows than the statement allows" (a scalar subquery's second row):
# the closest to a model giving one input more rows than its declared bound.
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
# Claims, in two tiers so that a batch never takes thousands of locks (lock-table space a few
# concurrent sessions would exhaust, ~3 µs each) and small batches of concurrent queries still
# run side by side (their inference then shares the pool's batches):
# - a bucket per first byte of the digest, key (model id, byte): a large batch takes its buckets
#   exclusively (at most 256 locks; a pass splits its inputs in lanes of disjoint buckets,
#   planner.site_pass.lane_of, so its own batches never wait for each other);
# - a small batch takes its buckets shared, then each digest, key (-1 - model id, 4 bytes).
# Buckets before digests, each tier in ascending order: no two batches wait on each other in a
# cycle. The ORDER BY sits in a subquery Postgres keeps whole, whose rows the aggregate takes,
# and locks, one by one in order.
SMALL_CLAIM = 512  # digests a batch may claim one by one
_CLAIM = (
    "SELECT count(pg_advisory_xact_lock{shared}($1::int4, k)) "
    "FROM (SELECT k FROM unnest($2::int4[]) AS k ORDER BY k OFFSET 0) AS claims"
)


# Without waiting: a large batch takes, of its buckets, those no other batch holds (in
# ascending order; the WHERE runs row by row over the ordered subquery) and leaves the inputs of
# the others for later. A try never waits, so it closes no cycle of waits; a batch that holds
# tried buckets waits for nothing else before its commit.
_TRY_CLAIM = (
    "SELECT coalesce(array_agg(k), '{}') FROM (SELECT k FROM unnest($2::int4[]) AS k ORDER BY k OFFSET 0) "
    "AS claims WHERE pg_try_advisory_xact_lock($1::int4, k)"
)


async def _try_claim(writer: asyncpg.Connection, model_id: int, digests: list[bytes]) -> set[int]:
    """The buckets of a large batch that it could claim without waiting."""
    buckets = sorted({d[0] for d in digests})
    return set(await writer.fetchval(_TRY_CLAIM, model_id, buckets))


async def _claim(writer: asyncpg.Connection, model_id: int, digests: list[bytes]) -> None:
    buckets = sorted({d[0] for d in digests})
    if len(digests) > SMALL_CLAIM:
        await writer.execute(_CLAIM.format(shared=""), model_id, buckets)
        return
    await writer.execute(_CLAIM.format(shared="_shared"), model_id, buckets)
    keys = sorted({int.from_bytes(d[:4], "big", signed=True) for d in digests})
    await writer.execute(_CLAIM.format(shared=""), -1 - model_id, keys)


@dataclass
class InputRows:
    """Input rows column by column: SieveDB's digest of each, each argument's values (a block,
    rows first, or one value per row) and how an error names each row (None: by digest only)."""

    digests: list[bytes]
    values: list[np.ndarray | list]
    labels: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.digests)

    def take(self, index: Sequence[int]) -> InputRows:
        index = list(index)
        values = [v[index] if isinstance(v, np.ndarray) else [v[i] for i in index] for v in self.values]
        labels = None if self.labels is None else [self.labels[i] for i in index]
        return InputRows([self.digests[i] for i in index], values, labels)

    @classmethod
    def concat(cls, parts: list[InputRows]) -> InputRows:
        if len(parts) == 1:
            return parts[0]
        values = [_concat_column([p.values[k] for p in parts]) for k in range(len(parts[0].values))]
        labels = None
        if any(p.labels is not None for p in parts):
            labels = [x for p in parts for x in (p.labels or [None] * len(p))]
        return cls([d for p in parts for d in p.digests], values, labels)


def _concat_column(columns: list) -> np.ndarray | list:
    if all(isinstance(c, np.ndarray) for c in columns) and len({c.shape[1:] for c in columns}) == 1:
        return np.concatenate(columns)
    return [v for c in columns for v in c]


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


@dataclass
class BatchResult:
    runs: int  # inputs the model ran on
    found: int  # inputs another batch had cached meanwhile
    values: dict[bytes, object]  # digest -> output of the inputs run (one-value models)
    deferred: InputRows | None = None  # inputs left alone: another batch held their buckets


async def run_batch(
    spec: ModelSpec,
    rows: InputRows,
    db: asyncpg.Pool,
    pool,
    also: Callable | None = None,
    wait: bool = True,
) -> BatchResult:
    """Run the model over the batch's inputs that no one cached yet and cache the outputs;
    ``also(connection, values)``, when given, runs in the same transaction once they are in.
    With ``wait`` false, a large batch does not wait for buckets another batch holds: their
    inputs come back as ``deferred`` (to run later, when the other batch has mostly cached them)."""
    rows = _unique_sorted(rows)
    deferred = None
    async with db.acquire() as writer, writer.transaction():
        await writer.execute(ASYNC_COMMIT)
        if wait or len(rows) <= SMALL_CLAIM:
            await _claim(writer, int(spec.id), rows.digests)
        else:
            rows, deferred = _split_claimed(rows, await _try_claim(writer, int(spec.id), rows.digests))
        done = await writer.fetch(
            f"SELECT DISTINCT digest FROM {spec.cache_table} WHERE digest = ANY($1::bytea[])", rows.digests
        )
        found = len(done)
        if done:
            cached = {bytes(r[0]) for r in done}
            rows = rows.take([i for i, d in enumerate(rows.digests) if d not in cached])
        if not len(rows):
            if also is not None:
                await also(writer, {})
            return BatchResult(0, found, {}, deferred)
        _check_images(spec, rows, full=False)  # headers only: cheap, and names a bad input
        inputs = {
            info["name"]: _tensor(rows.values[i], spec, i, info)
            for i, info in enumerate(spec.signature["inputs"])
        }
        try:
            outputs = await pool.infer(model_ref(spec), inputs)
        except InferenceError:
            await _explain_bad_images(spec, rows)  # a data error, when an image is the cause
            raise
        _check_row_bound(spec, rows, outputs)  # before any write: the batch caches all or nothing
        cache_rows = _cache_rows(spec, rows.digests, outputs)
        await _write_cache(spec, cache_rows, writer)
        values = {r[0]: r[2] for r in cache_rows} if one_value(spec) else {}
        if also is not None:
            await also(writer, values)
    return BatchResult(len(rows), found, values, deferred)


def _split_claimed(rows: InputRows, claimed: set[int]) -> tuple[InputRows, InputRows | None]:
    """(the inputs in claimed buckets, the others or None)."""
    mine = [i for i, d in enumerate(rows.digests) if d[0] in claimed]
    if len(mine) == len(rows):
        return rows, None
    mine_set = set(mine)
    return rows.take(mine), rows.take([i for i in range(len(rows)) if i not in mine_set])


def one_value(spec: ModelSpec) -> bool:
    """One scalar result per input (not an array, not rows): it can travel as one array."""
    return not spec.row_index and len(spec.bindings) == 1 and not spec.bindings[0].sql_type.is_array


def _unique_sorted(rows: InputRows) -> InputRows:
    """The rows in digest order, each digest once (claims and COPY want both)."""
    order = sorted(range(len(rows)), key=rows.digests.__getitem__)
    digests = rows.digests
    keep = [i for k, i in enumerate(order) if k == 0 or digests[i] != digests[order[k - 1]]]
    return rows.take(keep)


# Outputs can always be computed again: a batch's commit need not wait for its WAL to reach the
# disk (a crash may lose the last batches, never make them half-visible; WAL stays in order).
ASYNC_COMMIT = "SET LOCAL synchronous_commit = off"


def input_label(digest: bytes, label: str | None) -> str:
    """How an error names one input: its digest, and the row it came from when known."""
    return f"input {bytes(digest).hex()}" + (f", row {label}" if label is not None else "")


def _image_inputs(spec: ModelSpec) -> list[tuple[int, str, dict]]:
    return [
        (i, name, opts)
        for i, (name, _) in enumerate(spec.args)
        if isinstance(opts := spec.options.get(name), dict) and opts.get("decode") == "image"
    ]


def _check_images(spec: ModelSpec, rows: InputRows, full: bool) -> None:
    for i, name, opts in _image_inputs(spec):
        bad = find_undecodable(list(rows.values[i]), opts, full=full)
        if bad is not None:
            row, why = bad
            label = input_label(rows.digests[row], rows.labels[row] if rows.labels else None)
            raise PlanError(
                INVALID_BINARY_REPRESENTATION,
                f'model {spec.name}: argument "{name}" of {label} is not a decodable image: {why}',
            )


async def _explain_bad_images(spec: ModelSpec, rows: InputRows) -> None:
    """After a failed batch: raise the data error naming the first image that cannot be decoded,
    if one is the cause (decoding every image again, in a thread, only on this path)."""
    if _image_inputs(spec):
        await asyncio.to_thread(_check_images, spec, rows, True)


def _tensor(values, spec: ModelSpec, index: int, info: dict) -> np.ndarray:
    """One model input for a batch (NULL array elements never get here: see send_forms)."""
    name, sql_type = spec.args[index]
    shape = info["shape"]
    if sql_type.base in ("bytea", "text"):
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
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


def _owners(spec: ModelSpec, outputs: dict) -> np.ndarray:
    """The input each row of a row-index model belongs to (column 0 of its first output)."""
    index = np.asarray(outputs[spec.signature["outputs"][0]["name"]])
    return (index[:, 0] if index.ndim == 2 else index).astype(int)


def _check_row_bound(spec: ModelSpec, rows: InputRows, outputs: dict) -> None:
    """Refuse a batch in which one input got more rows than ``spec.max_rows``: an aggregate
    certified over the model's rows relies on the bound, so it must hold of every cached input."""
    if not spec.row_index or spec.max_rows is None:
        return  # one row per input, or no bound to keep
    owners = _owners(spec, outputs)
    counts = np.bincount(owners[owners >= 0], minlength=len(rows))[: len(rows)]
    over = np.flatnonzero(counts > spec.max_rows)
    if not len(over):
        return
    first = int(over[0])
    label = input_label(rows.digests[first], rows.labels[first] if rows.labels else None)
    raise PlanError(
        CARDINALITY_VIOLATION,
        f"model {spec.name} gave {int(counts[first])} rows for {label}, over its bound of "
        f"{spec.max_rows} rows per input (max_rows)",
        detail=f"{len(over)} of the batch's {len(rows)} inputs are over the bound; "
        "no output of the batch was cached",
        hint=_bound_hint(spec),
    )


def _bound_hint(spec: ModelSpec) -> str:
    if spec.options.get("max_rows") == spec.max_rows:
        return 'raise "max_rows" in the function\'s options (CREATE OR REPLACE FUNCTION), or fix the model'
    return f"the model file says its first output has {spec.max_rows} rows: the file is wrong about its shape"


def _cache_rows(spec: ModelSpec, digests: list[bytes], outputs: dict) -> list[tuple]:
    columns = [_column_values(b, outputs) for b in spec.bindings]
    if not spec.row_index:
        return list(zip(digests, [0] * len(digests), *columns, strict=True))
    rows, ordinals = [], {}
    for m, owner in enumerate(_owners(spec, outputs)):
        ordinal = ordinals.get(owner, 0)
        ordinals[owner] = ordinal + 1
        rows.append((digests[owner], ordinal, *(col[m] for col in columns)))
    empty = (None,) * len(columns)
    rows += [(d, -1, *empty) for i, d in enumerate(digests) if i not in ordinals]
    return sorted(rows, key=lambda r: (r[0], r[1]))


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
    """Add a batch's outputs to the cache, inside the caller's transaction, in key order."""
    schema, table = spec.cache_table.split(".")
    columns = ["digest", "ordinal", *[b.column for b in spec.bindings]]
    await writer.copy_records_to_table(table, schema_name=schema, records=rows, columns=columns)
