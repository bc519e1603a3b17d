"""Seeded random queries over the video views, each compared with the same SQL over plain
tables of the model outputs: every rewrite (pruning, pushdown, OR-implied and transferred
conditions, semi-joins, early-stopping LIMIT) must keep the answer exact. Caches are cleared
before some queries, so cold, warm and partly warm plans are all exercised."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from tests.support.video import LABELS, LIGHTS, clear_caches

QUERIES = 80
SEED = 41

# FROM clauses over the views, with the columns each one exposes (qualified) by kind
SOURCES = [
    ("colors c", {"frame": "c.frame", "camera": "c.camera", "label": "c.label", "color": "c.color"}),
    ("objects o", {"frame": "o.frame", "camera": "o.camera", "label": "o.label", "score": "o.score"}),
    (
        "frame_stats s",
        {"frame": "s.frame", "camera": "s.camera", "light": "s.light", "vehicles": "s.vehicles"},
    ),
    (
        "frames f JOIN frame_stats s ON s.frame = f.frame",
        {"frame": "f.frame", "camera": "f.camera", "light": "s.light", "vehicles": "s.vehicles"},
    ),
    (
        "objects o JOIN frame_stats s USING (frame)",
        {"frame": "frame", "label": "o.label", "light": "s.light", "score": "o.score"},
    ),
    (
        "colors c JOIN frame_stats s ON s.frame = c.frame",
        {"frame": "c.frame", "color": "c.color", "light": "s.light", "vehicles": "s.vehicles"},
    ),
    (
        "frames f LEFT JOIN objects o ON o.frame = f.frame AND o.score > 0.5",
        {"frame": "f.frame", "camera": "f.camera", "label": "o.label", "score": "o.score"},
    ),
]


def _atom(rng: random.Random, columns: dict[str, str]) -> str:
    kind = rng.choice(sorted(columns))
    col = columns[kind]
    if kind == "frame":
        lo = rng.randrange(0, 1000)
        return rng.choice(
            [f"{col} BETWEEN {lo} AND {lo + rng.randrange(5, 200)}", f"{col} < {lo}", f"{col} = {lo}"]
        )
    if kind == "camera":
        return f"{col} = {rng.randrange(0, 4)}"
    if kind == "label":
        return f"{col} = '{rng.choice(LABELS)}'"
    if kind == "light":
        return f"{col} = '{rng.choice(LIGHTS)}'"
    if kind == "color":
        return f"{col} IN ('red', 'blue')"
    if kind == "vehicles":
        return f"{col} > {rng.randrange(0, 6)}"
    return f"{col} > {rng.choice([0.3, 0.6, 0.9])}"


def _condition(rng: random.Random, columns: dict[str, str], depth: int = 0) -> str:
    roll = rng.random()
    if depth < 2 and roll < 0.25:
        return f"({_condition(rng, columns, depth + 1)} OR {_condition(rng, columns, depth + 1)})"
    if depth < 2 and roll < 0.4:
        return f"({_condition(rng, columns, depth + 1)} AND {_condition(rng, columns, depth + 1)})"
    if depth < 2 and roll < 0.45:
        return f"NOT ({_atom(rng, columns)})"
    if roll < 0.52 and "frame" in columns:
        return f"{columns['frame']} IN (SELECT fr.frame FROM frames fr WHERE fr.camera = {rng.randrange(4)})"
    return _atom(rng, columns)


def _query(rng: random.Random) -> tuple[str, bool]:
    """(SQL over the views, whether its rows come in a defined order)."""
    source, columns = rng.choice(SOURCES)
    where = " AND ".join(_condition(rng, columns) for _ in range(rng.randrange(1, 3)))
    picked = sorted(rng.sample(sorted(columns), k=min(len(columns), rng.randrange(1, 4))))
    select = [columns[k] for k in picked]
    shape = rng.random()
    if shape < 0.1 and " " in source and "JOIN" not in source:
        everything = list(dict.fromkeys([columns["frame"], *columns.values()]))
        inner = ", ".join(everything)
        keys = ", ".join(f"{c} NULLS LAST" for c in everything)
        alias = source.split()[-1]
        outer = where.replace(f"{alias}.", "t.")
        return (
            f"SELECT * FROM (SELECT {inner} FROM {source} ORDER BY {keys} LIMIT {rng.randrange(1, 30)}) t "
            f"WHERE {outer}",
            False,
        )
    if shape < 0.2:
        group = select[0]
        return f"SELECT {group}, count(*) FROM {source} WHERE {where} GROUP BY {group}", False
    if shape < 0.45 and "frame" in columns:
        keys = [columns["frame"], *[c for c in select if c != columns["frame"]]]
        listed = ", ".join(keys)
        order = ", ".join(f"{k} NULLS LAST" for k in keys)
        return (
            f"SELECT {listed} FROM {source} WHERE {where} ORDER BY {order} LIMIT {rng.randrange(1, 12)}",
            True,
        )
    return f"SELECT {', '.join(select)} FROM {source} WHERE {where}", False


def _plain(sql: str) -> str:
    return re.sub(r"\b(objects|colors|frame_stats)\b", r"plain_\1", sql)


def test_random_queries_answer_as_over_plain_tables(video):
    rng = random.Random(SEED)
    with video.connect() as conn:
        for i in range(QUERIES):
            sql, ordered = _query(rng)
            if rng.random() < 0.3:
                clear_caches(conn)
            got = conn.execute(sql).fetchall()
            want = conn.execute(_plain(sql)).fetchall()
            same = got == want if ordered else Counter(got) == Counter(want)
            assert same, (
                f"query {i}: {sql}\n  SieveDB {len(got)} rows: {got[:5]}\n  plain {len(want)}: {want[:5]}"
            )


@pytest.mark.parametrize("prepare", [True], ids=["extended"])
def test_random_limits_over_the_extended_protocol(video, prepare):
    rng = random.Random(SEED + 1)
    with video.connect() as conn:
        for i in range(20):
            sql, ordered = _query(rng)
            if not ordered:
                continue
            clear_caches(conn)
            got = conn.execute(sql, prepare=prepare).fetchall()
            want = conn.execute(_plain(sql)).fetchall()
            assert got == want, f"query {i}: {sql}\n  SieveDB {got}\n  plain {want}"
