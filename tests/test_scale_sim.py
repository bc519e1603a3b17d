"""The scale simulation (bench/scale_sim.py) behaves as its queueing model says, on synthetic costs.

No timing: these fix the model's logic, so that the plan in docs/SCALING.md moves only when the
measured costs do.
"""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import pairwise

import pytest

from bench.scale_sim import (
    CLAIMS,
    FRONTEND,
    HOST,
    MODEL,
    POSTGRES,
    Cluster,
    Costs,
    Station,
    Workload,
    mva_throughput,
    predict,
    scale_path,
    sized_cluster,
    units_until_shift,
)

# Roughly this machine's orders of magnitude: a light model costs less per row than its cache write.
LIGHT = Costs(
    fe_s_per_statement=2e-3,
    fe_s_per_row=2e-6,
    fe_s_per_batch=2e-4,
    model_s_per_row=1e-6,
    model_s_per_batch=5e-4,
    pg_rows_per_s=200_000,
    pg_s_per_statement=3e-4,
)
# A mid-size model: 0.1 ms per row.
MEDIUM = replace(LIGHT, model_s_per_row=1e-4)
# A detector: 20 ms per frame on one GPU.
HEAVY = replace(LIGHT, model_s_per_row=20e-3)
WORK = Workload(rows_per_query=10_000, batch_rows=1024, clients=64)


def test_cheap_model_and_many_gpus_are_limited_by_postgres_writes() -> None:
    p = predict(LIGHT, WORK, Cluster(frontends=64, gpus=64))
    assert p.bottleneck == POSTGRES
    # One Postgres absorbing 200,000 rows/s caps distinct rows/s just below that (statements cost too).
    assert 150_000 < p.bound_rows_per_s <= 200_000
    assert p.rows_per_s <= p.bound_rows_per_s * (1 + 1e-9)
    assert p.utilization[POSTGRES] == pytest.approx(max(p.utilization.values()))


def test_heavy_model_is_limited_by_gpus_and_scales_linearly_with_them() -> None:
    rates = []
    for gpus in (1, 2, 4, 8):
        p = predict(HEAVY, WORK, Cluster(frontends=4, gpus=gpus))
        assert p.bottleneck == MODEL
        rates.append(p.bound_rows_per_s)
    assert rates[0] == pytest.approx(1 / (20e-3 + 5e-4 / 1024), rel=1e-3)
    for k, rate in zip((2, 4, 8), rates[1:], strict=True):
        assert rate == pytest.approx(k * rates[0], rel=1e-9)


def test_throughput_is_monotone_in_gpus_and_flat_past_the_bottleneck() -> None:
    rates = [predict(MEDIUM, WORK, Cluster(frontends=64, gpus=m)).rows_per_s for m in range(1, 65)]
    assert all(b >= a * (1 - 1e-9) for a, b in pairwise(rates))
    shift = units_until_shift(MEDIUM, WORK, Cluster(frontends=64, gpus=1), MODEL)
    assert shift is not None and 1 < shift < 64
    assert predict(MEDIUM, WORK, Cluster(frontends=64, gpus=shift - 1)).bottleneck == MODEL
    assert predict(MEDIUM, WORK, Cluster(frontends=64, gpus=shift)).bottleneck != MODEL
    # Past the shift, more GPUs buy (almost) nothing: the bound no longer moves.
    past = [predict(MEDIUM, WORK, Cluster(frontends=64, gpus=m)).bound_rows_per_s for m in (shift, 2 * shift)]
    assert past[1] == pytest.approx(past[0], rel=1e-9)


def test_throughput_is_monotone_in_frontends_and_in_clients() -> None:
    by_fe = [predict(LIGHT, WORK, Cluster(frontends=n, gpus=4)).rows_per_s for n in range(1, 17)]
    assert all(b >= a * (1 - 1e-9) for a, b in pairwise(by_fe))
    by_clients = [
        predict(LIGHT, replace(WORK, clients=c), Cluster(frontends=2, gpus=2)).rows_per_s
        for c in (1, 2, 4, 16, 256)
    ]
    assert all(b > a for a, b in pairwise(by_clients))


def test_frontend_cpu_limits_when_rows_are_expensive_to_handle_and_few_frontends() -> None:
    costly = replace(LIGHT, fe_s_per_row=20e-6)
    p = predict(costly, WORK, Cluster(frontends=1, gpus=8))
    assert p.bottleneck == FRONTEND
    more = predict(costly, WORK, Cluster(frontends=2, gpus=8))
    assert more.bound_rows_per_s == pytest.approx(2 * p.bound_rows_per_s, rel=1e-9)


def test_mva_is_below_the_bound_and_reaches_it_with_many_clients() -> None:
    for cluster in (Cluster(1, 1), Cluster(4, 2), Cluster(16, 16)):
        few = predict(LIGHT, replace(WORK, clients=1), cluster)
        many = predict(LIGHT, replace(WORK, clients=512), cluster)
        assert few.rows_per_s < many.rows_per_s <= many.bound_rows_per_s * (1 + 1e-9)
        assert many.rows_per_s > 0.95 * many.bound_rows_per_s


def test_one_client_sees_the_sum_of_the_demands() -> None:
    net = [Station("a", 1, 0.1), Station("b", 4, 0.3)]
    assert mva_throughput(net, 1) == pytest.approx(1 / 0.4)
    assert mva_throughput(net, 1, think_s=0.6) == pytest.approx(1.0)
    # Many clients: the station with the least capacity (a: 10/s, b: 13.3/s) sets the rate.
    assert mva_throughput(net, 400) == pytest.approx(10.0, rel=1e-2)


def test_duplicate_work_divides_useful_throughput_when_model_bound() -> None:
    cluster = Cluster(frontends=4, gpus=2)
    once = predict(HEAVY, WORK, cluster)
    twice = predict(HEAVY, replace(WORK, duplicate_factor=2.0), cluster)
    assert once.bottleneck == twice.bottleneck == MODEL
    assert twice.bound_rows_per_s == pytest.approx(once.bound_rows_per_s / 2, rel=1e-3)


def test_larger_batches_help_only_while_per_batch_overhead_matters() -> None:
    tiny = replace(LIGHT, model_s_per_batch=5e-3)  # Ray's per-call cost dominating a cheap model
    cluster = Cluster(frontends=64, gpus=1)
    small = predict(tiny, replace(WORK, batch_rows=64), cluster)
    big = predict(tiny, replace(WORK, batch_rows=4096), cluster)
    assert small.bottleneck == MODEL and big.bound_rows_per_s > 5 * small.bound_rows_per_s


def test_shared_host_caps_co_located_replicas() -> None:
    # This machine: everything on 2 cores. CPU replicas past the cores add nothing.
    on_host = [predict(MEDIUM, WORK, Cluster(frontends=1, gpus=m, host_cores=2)) for m in (1, 2, 4)]
    assert on_host[0].bottleneck == MODEL
    assert on_host[2].bottleneck == HOST
    assert on_host[2].bound_rows_per_s == pytest.approx(on_host[1].bound_rows_per_s, rel=1e-9)
    apart = predict(MEDIUM, WORK, Cluster(frontends=1, gpus=4))
    assert apart.bound_rows_per_s >= on_host[2].bound_rows_per_s


def test_scale_path_moves_the_bottleneck_and_never_loses_throughput() -> None:
    path = scale_path(LIGHT, WORK, Cluster(1, 1), steps=10)
    rates = [p.bound_rows_per_s for p in path]
    assert all(b >= a * (1 - 1e-9) for a, b in pairwise(rates))
    seen = {p.bottleneck for p in path}
    assert {POSTGRES, FRONTEND} <= seen
    # Doubling Postgres (Citus workers) is what lifts the cheap model past one instance's writes.
    assert any(p.cluster.pg_servers > 1 for p in path)
    assert rates[-1] > 4 * rates[0]


def test_units_until_shift_none_when_nothing_else_limits() -> None:
    free = Costs(
        fe_s_per_statement=0,
        fe_s_per_row=0,
        fe_s_per_batch=0,
        model_s_per_row=1e-3,
        model_s_per_batch=0,
        pg_rows_per_s=math.inf,
    )
    assert units_until_shift(free, WORK, Cluster(1, 1), MODEL) is None


@pytest.mark.parametrize(
    "make",
    [
        lambda: replace(LIGHT, model_s_per_row=-1.0),
        lambda: replace(LIGHT, pg_rows_per_s=0.0),
        lambda: replace(LIGHT, fe_s_per_row=math.nan),
        lambda: Workload(duplicate_factor=0.5),
        lambda: Workload(batch_rows=0),
        lambda: Cluster(frontends=0),
        lambda: Cluster(host_cores=0),
        lambda: Cluster(claim_lanes=0),
    ],
)
def test_bad_inputs_are_refused(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_sized_cluster_keeps_the_gpus_the_bottleneck_with_the_fewest_others() -> None:
    for gpus in (1, 10, 100):
        cluster = sized_cluster(HEAVY, WORK, gpus)
        p = predict(HEAVY, WORK, cluster)
        assert cluster.gpus == gpus and p.bottleneck == MODEL
        assert p.bound_rows_per_s == pytest.approx(gpus / (20e-3 + 5e-4 / 1024), rel=1e-3)
        if cluster.frontends > 1:
            fewer = replace(cluster, frontends=cluster.frontends - 1)
            assert predict(HEAVY, WORK, fewer).bottleneck == FRONTEND
        if cluster.pg_servers > 1:
            fewer = replace(cluster, pg_servers=cluster.pg_servers - 1)
            assert predict(HEAVY, WORK, fewer).bottleneck == POSTGRES
    medium = sized_cluster(MEDIUM, WORK, 100)
    assert medium.frontends > 1 and medium.pg_servers > 1
    assert predict(MEDIUM, WORK, medium).bottleneck == MODEL
    assert predict(MEDIUM, WORK, replace(medium, frontends=medium.frontends - 1)).bottleneck == FRONTEND
    assert predict(MEDIUM, WORK, replace(medium, pg_servers=medium.pg_servers - 1)).bottleneck == POSTGRES
    # A cheap model on 100 replicas needs many Postgres servers: the writes, not the GPUs, cost most.
    light = sized_cluster(LIGHT, WORK, 100)
    assert light.pg_servers > 10 and light.frontends > 10


def test_claim_lanes_cap_one_models_gpus_until_lanes_grow() -> None:
    # Two lanes: at most two large batches of one model between claim and commit, deployment-wide.
    by_gpus = [predict(HEAVY, WORK, Cluster(frontends=8, gpus=m, claim_lanes=2)) for m in (1, 2, 4, 16)]
    assert by_gpus[0].bottleneck == MODEL
    assert by_gpus[2].bottleneck == by_gpus[3].bottleneck == CLAIMS
    assert by_gpus[3].bound_rows_per_s == pytest.approx(by_gpus[2].bound_rows_per_s, rel=1e-9)
    # A lane is held longer than a replica is busy (front-end rows and the write too): < 2 GPUs' worth.
    assert by_gpus[3].bound_rows_per_s < 2 * by_gpus[0].bound_rows_per_s
    wider = predict(HEAVY, WORK, Cluster(frontends=8, gpus=16, claim_lanes=16))
    assert wider.bound_rows_per_s > 7 * by_gpus[3].bound_rows_per_s
    path = scale_path(HEAVY, WORK, Cluster(frontends=1, gpus=1, claim_lanes=2), steps=8)
    assert CLAIMS in {p.bottleneck for p in path}
    assert path[-1].cluster.claim_lanes > 2
