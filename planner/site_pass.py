"""One pass over a call site's input rows: decode chunks, gather new inputs into batches, run
them IN_FLIGHT at a time (planner.batches), and, on the map path, enter the rows in the row map
(planner.map_pass). planner.materialize decides which path a site takes and drives the pass.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import asyncpg
import numpy as np

from planner import map_pass, send_forms
from planner.batches import ASYNC_COMMIT, InputRows, input_label, run_batch
from planner.calls import CallSite
from planner.map_pass import MapRows, Survey
from planner.model_spec import ModelSpec
from planner.outcome import PlanError, SessionPort
from planner.row_maps import MapTarget

BATCH_ROWS = 4096  # inputs per model run and per COPY
MAP_FLUSH_ROWS = 16384  # map entries that are written even when no input of theirs needs the model
IN_FLIGHT = 2  # batches running while the next chunks are read
LANES = 2  # see lane_of (more lanes: more batches of one model at once, each smaller)
# A lane submits a batch when it holds LANE_ROWS new inputs: the lanes together hold about as many
# inputs as two full batches, so the first batch starts as early as with two lanes.
LANE_ROWS = BATCH_ROWS * 2 // LANES
# A batch does not wait for claim buckets that a batch of another session (or front-end) holds:
# their inputs are set aside and join the lane's next batch, when the other batch has mostly
# cached them. Once a lane has set aside this many, its next batch waits (bounded memory); the
# pass's last inputs set aside wait too (planner.batches: the blocking claim, ascending order).
# SET_ASIDE_ROWS = 0 turns setting aside off (the comparison in the split-work measurement).
SET_ASIDE_ROWS = LANE_ROWS
NOTICE_EVERY_S = 3.0


# -- chunks -------------------------------------------------------------------------------------


@dataclass
class _Chunk:
    """A decoded chunk: its new inputs (in row order, with their row positions) and, on the map
    path, the rows to enter in the map."""

    run: InputRows
    positions: np.ndarray
    mapped: MapRows | None = None

    def split(self, k: int) -> tuple[_Chunk, _Chunk]:
        """The chunk up to its k-th new input (and the map rows before it), and the rest."""
        cut = int(self.positions[k - 1]) + 1
        head = _Chunk(self.run.take(range(k)), self.positions[:k])
        tail = _Chunk(self.run.take(range(k, len(self.run))), self.positions[k:])
        if self.mapped is not None:
            head.mapped, tail.mapped = self.mapped.split(cut)
        return head, tail


def lane_of(digest: bytes) -> int:
    """The lane of an input: batches of different lanes never claim the same key (the claims
    are keyed by the digest's first byte, planner.batches), so they run side by side."""
    return digest[0] % LANES


def _by_lane(chunk: _Chunk) -> list[_Chunk]:
    """A chunk cut in one part per lane (rows keep their positions)."""
    run_lanes = [lane_of(d) for d in chunk.run.digests]
    parts = []
    for lane in range(LANES):
        index = [i for i, k in enumerate(run_lanes) if k == lane]
        part = _Chunk(chunk.run.take(index), chunk.positions[index])
        if chunk.mapped is not None:
            part.mapped = chunk.mapped.take(
                [j for j, d in enumerate(chunk.mapped.digests) if lane_of(d) == lane]
            )
        parts.append(part)
    return parts


@dataclass
class _Lane:
    """Inputs held for a lane's next batch, and its last batch (the next one's predecessor)."""

    pending: list[_Chunk] = field(default_factory=list)
    runs: int = 0
    mapped: int = 0
    last: asyncio.Task | None = None
    set_aside: list[_Chunk] = field(default_factory=list)  # inputs whose claims another batch held

    def take_set_aside(self) -> tuple[list[_Chunk], bool]:
        """The inputs set aside, and whether the batch they join must wait for its claims."""
        parts, self.set_aside = self.set_aside, []
        return parts, sum(len(p.run) for p in parts) >= SET_ASIDE_ROWS


def _decode(spec: ModelSpec, sends: list, digests: list[bytes], new: list[int], label_of=None) -> InputRows:
    """The new inputs' arguments decoded from their send forms (see planner.send_forms); each
    column of ``sends`` is a list of bytes or a uint8 block (rows of one length)."""
    values = []
    for (name, sql_type), column in zip(spec.args, sends, strict=True):
        block, raws = None, None
        if isinstance(column, np.ndarray):
            part = column[new]
            block = _block_or_none(sql_type, part, spec, name, digests, new, label_of)
            raws = None if block is not None else [row.tobytes() for row in part]
        else:
            raws = [column[i] for i in new]
        if block is None:
            block = _column(sql_type, raws, spec, name, digests, new, label_of)
        values.append(block)
    return InputRows([digests[i] for i in new], values)


def _block_or_none(sql_type, part: np.ndarray, spec: ModelSpec, name: str, digests, new, label_of):
    if not len(part):
        return None
    try:
        return send_forms.decode_block(sql_type, part, spec.name, name)
    except PlanError:  # every row shares the first one's header, NULL flag included
        return _column(sql_type, [row.tobytes() for row in part], spec, name, digests, new, label_of)


def _column(sql_type, raws: list[bytes], spec: ModelSpec, name: str, digests, new, label_of):
    try:
        return send_forms.decode_column(sql_type, raws, spec.name, name)
    except PlanError as exc:  # name the input, as every data error of a batch does
        row = _first_bad(sql_type, raws, spec.name, name)
        where = input_label(digests[new[row]], label_of(new[row]) if label_of else None)
        raise PlanError(exc.sqlstate, f"{exc} ({where})", hint=exc.hint) from None


def _first_bad(sql_type, raws: list[bytes], model: str, arg: str) -> int:
    for i, raw in enumerate(raws):
        try:
            send_forms.decode(sql_type, raw, model, arg)
        except PlanError:
            return i
    return 0


def _names_rows(spec: ModelSpec) -> bool:
    """Errors found while a batch runs (an undecodable image) name their input's row."""
    return any(sql_type.base in ("bytea", "text") for _, sql_type in spec.args)


# -- one pass over a site's input rows ------------------------------------------------------------


class SitePass:
    """Decode chunks, gather new inputs into batches, run them IN_FLIGHT at a time."""

    def __init__(
        self, spec: ModelSpec, writer: asyncpg.Pool, pool, port: SessionPort, target: MapTarget | None
    ):
        self.spec, self.writer, self.pool, self.port, self.target = spec, writer, pool, port, target
        self.seen: set[bytes] = set()
        self.lanes = [_Lane() for _ in range(LANES)]
        self.tasks: deque[asyncio.Task] = deque()  # batches running, oldest first
        self.runs = self.hits = self.mapped = self.read = 0
        self.survey: Survey | None = None  # map path: the rows reaching the call, the marker
        self.unkept = self.unentered = 0  # map path: rows read that got no entry
        self.total_sql: str | None = None  # digest path: how to count the inputs, when it takes long
        self.total: int | None = None
        self.filenode: int | None = None
        self.armed = False
        self.started = self.last_notice = time.monotonic()

    async def read_ranges(self, sql: str) -> None:
        """Map path: read the block ranges (planner.map_pass), the next while this one is fed;
        the pass makes no other use of the session meanwhile (statement_timeout is armed first)."""
        await self.arm()
        nargs, relid = len(self.spec.args), self.target.rowmap.relid

        async def fetch(bounds: tuple[str, str]) -> map_pass.RangeRows:
            (row,) = await self.port.fetch(sql, bounds)
            return map_pass.parse_range(row, nargs, relid)

        ranges = map_pass.block_ranges(self.survey)
        ahead = asyncio.ensure_future(fetch(next(ranges)))
        try:
            for bounds in ranges:
                rows = await ahead
                ahead = asyncio.ensure_future(fetch(bounds))
                await self._feed_range(rows)
            await self._feed_range(await ahead)
        finally:
            if not ahead.done():
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    async def arm(self) -> None:
        """statement_timeout counts from the first expensive step (the setting is read once)."""
        if not self.armed:
            self.armed = True
            await self.port.arm_statement_timeout()

    async def feed(self, rows: list[tuple]) -> None:
        """Digest path: a chunk of the input query's rows."""
        self.read += len(rows)
        await self._gather(self._digest_chunk(rows))

    async def _feed_range(self, rows: map_pass.RangeRows) -> None:
        self.read += len(rows.digests)
        await self._gather(self._map_chunk(rows))

    async def _gather(self, chunk: _Chunk) -> None:
        """Hold a chunk's new inputs in their lanes; a lane submits a batch whenever it holds
        LANE_ROWS of them."""
        for lane, part in zip(self.lanes, _by_lane(chunk), strict=True):
            while lane.runs + len(part.run) >= LANE_ROWS:
                head, part = part.split(LANE_ROWS - lane.runs)
                self._hold(lane, head)
                await self._submit(lane)
            self._hold(lane, part)
            if lane.mapped >= MAP_FLUSH_ROWS:
                await self._submit(lane)
        await self._report()

    def _digest_chunk(self, rows: list[tuple]) -> _Chunk:
        """Rows (digest, cached?, send forms...): cached inputs are counted once; new ones are
        keyed by the digest SieveDB computes itself from the bytes the model will run on."""
        seen, missing = self.seen, []
        for i, row in enumerate(rows):
            if not row[1]:
                missing.append(i)
            elif row[0] not in seen:
                seen.add(row[0])
                self.hits += 1
        width = len(self.spec.args)
        sends = [[rows[i][2 + k] for i in missing] for k in range(width)]
        digests = send_forms.digests_of(sends)
        new = self._unseen(digests)
        run = _decode(self.spec, sends, digests, new)
        return _Chunk(run, np.asarray([missing[i] for i in new], dtype=np.int64))

    def _map_chunk(self, rows: map_pass.RangeRows) -> _Chunk:
        """Rows that the map does not hold yet: identities, send forms, digests."""
        assert self.target is not None
        ids = rows.ids
        if self.filenode is None and len(ids):
            self.filenode = rows.filenode
        keep = np.full(len(ids), rows.verified and rows.filenode == self.filenode)
        self.unkept += len(keep) - int(keep.sum())
        new = self._unseen(rows.digests)
        run = _decode(
            self.spec, rows.sends, rows.digests, new, lambda i: f"({ids['block'][i]},{ids['offset'][i]})"
        )
        if _names_rows(self.spec):
            run.labels = [f"({ids['block'][i]},{ids['offset'][i]})" for i in new]
        return _Chunk(run, np.asarray(new, dtype=np.int64), map_pass.map_rows(ids, keep, rows.digests))

    def _unseen(self, digests: list[bytes]) -> list[int]:
        """Positions of the digests not met before in this pass (each kept once)."""
        seen, new = self.seen, []
        for i, digest in enumerate(digests):
            if digest not in seen:
                seen.add(digest)
                new.append(i)
        return new

    def _hold(self, lane: _Lane, chunk: _Chunk) -> None:
        lane.pending.append(chunk)
        lane.runs += len(chunk.run)
        lane.mapped += len(chunk.mapped) if chunk.mapped is not None else 0

    async def _submit(self, lane: _Lane) -> None:
        aside, wait = lane.take_set_aside()
        parts, lane.pending = lane.pending + aside, []
        lane.runs = lane.mapped = 0
        lane.last = await self._start(parts, [lane.last], wait) or lane.last

    async def _start(self, parts: list[_Chunk], previous: list, wait: bool = False) -> asyncio.Task | None:
        """Start a batch of these parts once fewer than IN_FLIGHT are running."""
        run = InputRows.concat([p.run for p in parts]) if parts else None
        mapped = MapRows.concat([p.mapped for p in parts]) if self.target is not None and parts else None
        if not run and not mapped:
            return None
        while len(self.tasks) >= IN_FLIGHT:
            finished, _ = await asyncio.wait([self.tasks[0]], timeout=NOTICE_EVERY_S)
            if finished:
                await self._collect(self.tasks.popleft())
            else:  # a long batch: say how far the work is meanwhile
                await self._report()
        await self.arm()
        wait = wait or SET_ASIDE_ROWS <= 0  # 0: no batch sets inputs aside (each waits, as before)
        task = asyncio.ensure_future(self._batch(run, mapped, [t for t in previous if t is not None], wait))
        self.tasks.append(task)
        return task

    async def _batch(
        self, run: InputRows, mapped: MapRows | None, previous: list, wait: bool
    ) -> tuple[int, int, int, _Chunk | None]:
        """Run a batch; enter its rows in the map: those whose outputs it computed in its own
        transaction, the others (cached before, or computed by earlier batches) after the
        batches before it are done. Inputs it set aside come back with their map rows."""
        rest = mapped
        rowmap = self.target.rowmap if self.target is not None else None

        async def enter_known(conn, values: dict) -> None:
            nonlocal rest
            entered, rest = await map_pass.write_known(conn, self.spec, rowmap, self.filenode, mapped, values)
            self.unentered -= entered

        if mapped:
            self.unentered += len(mapped)
        if previous and not wait:  # its own lane's batch holds the claims: wait for it, not set aside
            await asyncio.wait(previous)
        known = enter_known if mapped else None
        done = await run_batch(self.spec, run, self.writer, self.pool, known, wait) if len(run) else None
        aside = None
        if done is not None and done.deferred is not None:
            aside, rest = _set_aside(done.deferred, rest)
            self.unentered -= len(aside.mapped) if aside.mapped is not None else 0  # counted again later
        if rest:
            if previous:  # its lane's outputs, which some of these rows read, come first
                await asyncio.wait(previous)
            async with self.writer.acquire() as conn, conn.transaction():
                await conn.execute(ASYNC_COMMIT)
                self.unentered -= await map_pass.write_cached(conn, self.spec, rowmap, self.filenode, rest)
        entered = len(mapped or ()) - (len(aside.mapped) if aside and aside.mapped is not None else 0)
        return (done.runs, done.found, entered, aside) if done else (0, 0, entered, None)

    async def _collect(self, task: asyncio.Task) -> None:
        runs, found, mapped, aside = await task
        self.runs += runs
        self.hits += found if self.target is not None else 0
        self.mapped += mapped
        if aside is not None:  # back to their lanes, for a later batch
            for lane, part in zip(self.lanes, _by_lane(aside), strict=True):
                if len(part.run):
                    lane.set_aside.append(part)
        self._note_progress()

    async def finish(self) -> None:
        # what the lanes still hold goes as one batch (a small pass makes one batch, not one a lane)
        parts = [part for lane in self.lanes for part in lane.pending]
        await self._start(parts, [lane.last for lane in self.lanes])
        await self._drain()
        # the last inputs set aside: their claims are waited for now (mostly cached by then)
        parts = [part for lane in self.lanes for part in lane.take_set_aside()[0]]
        await self._start(parts, [lane.last for lane in self.lanes], wait=True)
        await self._drain()
        if self.survey is not None:  # rows the map held already: served without the model
            self.hits += max(0, self.survey.reaching - self.read)

    async def _drain(self) -> None:
        while self.tasks:
            await self._collect(self.tasks.popleft())

    def completes_map(self, site: CallSite) -> bool:
        """Did this pass enter every row of the table (see planner.map_pass)?"""
        found = self.survey
        if found is None or found.vouched or site.where_sql or self.unkept or self.unentered:
            return False
        return self.filenode is None or self.filenode == found.filenode

    async def abort(self) -> None:
        tasks, self.tasks = list(self.tasks), deque()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _note_progress(self) -> None:
        """The structured twin of the progress NOTICE (the server's list of running statements)."""
        known = self.total if self.total is not None else self.survey.reaching if self.survey else None
        self.port.progress(self.spec.name, self.runs, known, time.monotonic() - self.started)

    async def _report(self) -> None:
        now = time.monotonic()
        self._note_progress()
        if now - self.last_notice <= NOTICE_EVERY_S:
            return
        self.last_notice = now
        if self.total is None:  # counted once, when the work turns out to be long
            if self.survey is not None:
                self.total = self.survey.reaching
            else:
                self.total = self.runs + (await self.port.fetch(self.total_sql))[0][0]
        self._note_progress()
        self.port.notice(_progress(self.spec, self.runs, self.total, now - self.started))


def _set_aside(run: InputRows, rest: MapRows | None) -> tuple[_Chunk, MapRows | None]:
    """Inputs a batch set aside, with the map rows that read their outputs (the batch enters
    the others)."""
    aside = _Chunk(run, np.zeros(len(run), dtype=np.int64))
    if rest is None:
        return aside, None
    held = set(run.digests)
    index = [j for j, d in enumerate(rest.digests) if d in held]
    aside.mapped = rest.take(index)
    others = set(index)
    return aside, rest.take([j for j in range(len(rest)) if j not in others])


def _progress(spec: ModelSpec, done: int, total: int, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    left = f"{(total - done) / rate:,.0f}" if rate > 0 else "?"
    return f"model {spec.name}: {done:,} of {total:,} inputs run ({rate:,.0f}/s, about {left} s left)"
