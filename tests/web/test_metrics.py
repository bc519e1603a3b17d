"""/metrics parses with Prometheus's own text parser, and its counters equal sums over
sieve.query_log (the server's log is the package's fresh database: every row is this run's)."""

from __future__ import annotations

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from tests.web.support import call


def families(base: str) -> dict:
    reply = call(base, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=")
    return {f.name: f for f in text_string_to_metric_families(reply.body)}


def totals(family, label: str | None = None) -> Counter:
    out: Counter = Counter()
    for sample in family.samples:
        if sample.name.endswith("_total"):
            out[sample.labels.get(label) if label else None] += sample.value
    return out


def test_metrics_counters_match_the_query_log(web_world):
    with web_world.connect() as conn:
        conn.execute("select digit_guess(pixels) from digits where id < 40").fetchall()
        conn.execute("select digit_guess(pixels) from digits where id < 60").fetchall()  # 40 cached
        modes = Counter(
            dict(conn.execute("select mode, count(*) from sieve.query_log group by mode").fetchall())
        )
        calls = Counter(
            dict(
                conn.execute(
                    "select key, sum(value::bigint) from sieve.query_log, "
                    "jsonb_each_text(model_calls) group by key"
                ).fetchall()
            )
        )
        hits = conn.execute("select coalesce(sum(cache_hits), 0) from sieve.query_log").fetchone()[0]
    found = families(web_world.base)
    assert totals(found["sievedb_planned_queries"], "mode") == modes
    # a model a query read without running it (a proxy over cached inputs) may have a child at 0
    counted = {k: v for k, v in totals(found["sievedb_model_calls"], "model").items() if v}
    assert counted == {k: float(v) for k, v in calls.items() if v}
    assert calls["digit_guess"] >= 60
    assert totals(found["sievedb_cache_hits"])[None] == float(hits) and hits >= 40
    for name in ("sievedb_connections", "sievedb_statements", "sievedb_errors", "sievedb_inference_seconds"):
        assert name in found, sorted(found)


def test_metrics_need_no_token_and_refuse_other_methods(web_world):
    assert call(web_world.base, "GET", "/metrics").status == 200
    reply = call(web_world.base, "POST", "/metrics", body={})
    assert reply.status == 405
