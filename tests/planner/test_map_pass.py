"""planner.map_pass without a server: block ranges, and a range's rows read back from one value."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from planner.map_pass import END_TID, IDENTITY, Survey, block_ranges, parse_range
from planner.send_forms import decode_block, digests_of
from planner.sqltypes import SqlType

RELID = 16384


def array_send(values: list[float]) -> bytes:
    head = struct.pack("!iiiii", 1, 0, 700, len(values), 1)
    return head + b"".join(struct.pack("!if", 4, v) for v in values)


def range_row(rows: list[tuple[tuple[int, int, int], list[bytes]]], rel: int = RELID) -> tuple:
    """What range_sql returns for these (identity, send forms) rows."""
    blob = b""
    for (block, offset, xid), sends in rows:
        blob += struct.pack("!IHI", block, offset, xid)
        blob += b"".join(struct.pack("!i", len(s)) + s for s in sends)
    return blob, len(rows), rel, rel, 777


@pytest.mark.parametrize("lengths", [[64, 64, 64], [64, 63, 64]])  # one layout, or several
@pytest.mark.parametrize("nargs", [1, 2])
def test_a_ranges_rows_come_back_with_the_digests_sievedb_computes(lengths: list[int], nargs: int) -> None:
    rng = np.random.default_rng(3)
    rows = [
        ((k, k + 1, 900 + k), [array_send(rng.random(n).tolist()) for _ in range(nargs)])
        for k, n in enumerate(lengths)
    ]
    got = parse_range(range_row(rows), nargs, RELID)
    assert got.verified and got.filenode == 777
    assert got.ids.dtype == IDENTITY and got.ids["offset"].tolist() == [1, 2, 3]
    sends = [[r[1][k] for r in rows] for k in range(nargs)]
    assert got.digests == digests_of(sends)
    column = got.sends[0]
    as_bytes = [bytes(c) for c in column] if isinstance(column, np.ndarray) else column
    assert as_bytes == sends[0]
    if isinstance(column, np.ndarray):
        block = decode_block(SqlType("float4", True), column, "m", "x")
        assert block.shape == (3, 64)


def test_rows_of_another_relation_are_not_verified() -> None:
    row = range_row([((1, 1, 5), [array_send([0.5] * 4)])], rel=RELID + 1)
    assert not parse_range(row, 1, RELID).verified


def test_block_ranges_cover_the_table_and_end_open() -> None:
    ranges = list(block_ranges(Survey(reaching=100_000, horizon=1, filenode=1, blocks=4000, vouched=False)))
    assert ranges[0][0] == "(0,0)" and ranges[-1][1] == END_TID
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert 20 <= len(ranges) <= 30  # about 4,096 rows each
    assert list(block_ranges(Survey(0, 1, 1, 0, False))) == [("(0,0)", END_TID)]
