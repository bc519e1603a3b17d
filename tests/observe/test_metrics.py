"""The server's Prometheus registry: parsed with Prometheus's own text parser, its counters that
mirror sieve.query_log equal sums over the log, and errors are counted by SQLSTATE."""

from __future__ import annotations

import psycopg
import pytest
from prometheus_client import generate_latest

from server.status_data import status_for
from tests.observe.live import total

APPROXIMATE = (
    "select id from digits where digit_oracle(pixels) = 7 recall target 90% confidence 95% "
    "budget 300 using proxy digit_proxy_p7(pixels)"
)


def log_sums(conn: psycopg.Connection) -> tuple[int, int, int, dict[str, int]]:
    """(rows, model calls, cache hits, rows by mode) over sieve.query_log (as a superuser: all)."""
    rows, calls, hits = conn.execute(
        "select count(*),"
        " coalesce(sum((select sum(v::bigint) from jsonb_each_text(model_calls) e(k, v))), 0),"
        " coalesce(sum(cache_hits), 0) from sieve.query_log"
    ).fetchone()
    modes = dict(conn.execute("select mode, count(*) from sieve.query_log group by mode").fetchall())
    return rows, int(calls), int(hits), modes


def test_query_log_counters_equal_sums_over_the_log(observed):
    with observed.connect() as conn:
        conn.execute("select id, digit_oracle(pixels) from digits where id < 300").fetchall()
        conn.execute("select id, digit_oracle(pixels) from digits where id < 400").fetchall()  # 300 hits
        conn.execute("set sieve.seed = 3")
        conn.execute(APPROXIMATE).fetchall()
        conn.execute("select count(*) from digits where digit_oracle(pixels) = 3 error target 20% budget 200")
        conn.execute("select count(*) from digits").fetchall()  # forwarded, not logged
        rows, calls, hits, modes = log_sums(conn)
    samples = observed.live.metrics()
    assert rows >= 4 and calls > 0 and hits >= 300
    assert total(samples, "sievedb_planned_queries_total") == rows
    for mode, count in modes.items():
        assert total(samples, "sievedb_planned_queries_total", mode=mode) == count
    assert total(samples, "sievedb_model_calls_total") == calls
    assert total(samples, "sievedb_cache_hits_total") == hits
    assert total(samples, "sievedb_statements_total", kind="approximate clause") >= 2
    assert total(samples, "sievedb_statements_total", kind="forwarded") >= 1


def test_inference_histograms_count_the_batches_run(observed):
    samples = observed.live.metrics()
    batches = total(samples, "sievedb_inference_batch_rows_count", model="digit_oracle")
    rows = total(samples, "sievedb_inference_batch_rows_sum", model="digit_oracle")
    assert batches >= 1 and rows >= batches
    assert total(samples, "sievedb_inference_seconds_count", model="digit_oracle") == batches
    assert total(samples, "sievedb_inference_seconds_sum", model="digit_oracle") > 0
    # the +Inf bucket holds every batch
    assert total(samples, "sievedb_inference_batch_rows_bucket", model="digit_oracle", le="+Inf") == batches


def test_connections_and_labels_pending_are_gauges_read_at_scrape_time(observed):
    before = total(observed.live.metrics(), "sievedb_connections")
    with observed.connect(), observed.connect("alice"):
        assert total(observed.live.metrics(), "sievedb_connections") == before + 2
    text = observed.live.call(observed.live.server.metrics.scrape()).decode()
    assert "# TYPE sievedb_labels_pending gauge" in text  # no label request filed: no sample, no error


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        ("select id from digits where digit_oracle(pixels) = 7 recall target 90% using proxy id", "22023"),
        ("select digit_oracle(pixels) from no_such_table", "42P01"),
        ("select 1 / 0", "22012"),  # no model: forwarded as raw frames, counted from Postgres's answer
        ("select * from no_such_table_either", "42P01"),
    ],
)
def test_an_error_sent_to_the_client_is_counted_by_its_sqlstate(observed, sql, sqlstate):
    before = total(observed.live.metrics(), "sievedb_errors_total", sqlstate=sqlstate)
    with observed.connect() as conn, pytest.raises(psycopg.Error) as raised:
        conn.execute(sql)
    assert raised.value.sqlstate == sqlstate
    assert total(observed.live.metrics(), "sievedb_errors_total", sqlstate=sqlstate) == before + 1


def test_the_registry_is_the_servers_own(observed):
    from prometheus_client import REGISTRY

    assert b"sievedb_" not in generate_latest(REGISTRY)
    assert observed.live.server.metrics.registry is not REGISTRY


def test_labels_pending_count_the_requests_a_labels_function_filed(observed):
    with observed.connect() as conn:
        conn.execute(
            "create function seven_by_eye(pixels real[]) returns boolean language labels as 'Is it a 7?'"
        )
        with pytest.raises(psycopg.Error) as raised:
            conn.execute("select id from digits where id < 6 and seven_by_eye(pixels)").fetchall()
        filed = conn.execute(
            "select count(*) from sieve.label_requests where function = 'seven_by_eye'"
        ).fetchone()[0]
    assert raised.value.sqlstate == "SV001" and filed == 6
    text = observed.live.call(observed.live.server.metrics.scrape(fresh=True)).decode()
    assert 'sievedb_labels_pending{function="seven_by_eye"} 6.0' in text
    samples = observed.live.metrics()
    assert total(samples, "sievedb_errors_total", sqlstate="SV001") >= 1
    labels = {r["function"]: r["pending"] for r in observed.live.call(_status(observed, "alice"))["labels"]}
    assert labels.get("seven_by_eye") == 6  # alice may execute it (PUBLIC): she sees its queue


def _status(observed, role: str):
    return status_for(observed.live.server, role, "postgres")
