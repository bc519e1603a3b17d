"""A queueing model of SieveDB past one machine: N front-ends, M model replicas (GPUs), Postgres.

Pure (no I/O, no randomness): ``bench/bench_scale.py`` feeds it costs measured on this machine and
prints its predictions beside what the machine can run; ``tests/test_scale_sim.py`` checks that it
behaves as a queueing model must; ``docs/SCALING.md`` quotes its plan.

The model is a closed queueing network (``clients`` queries in flight at once, each materializing
``rows_per_query`` cold inputs in batches of ``batch_rows``). Every query visits three stations:

- **front-end CPU**: ``frontends * frontend_cores`` servers. A SieveDB front-end is one asyncio
  process, so one core each by default. Demand: planning the statement, handling each row
  (digests, encoding, building the cache COPY) and each batch (scheduling it on the backend).
- **model replicas**: ``gpus`` servers (Ray actors, one per GPU). Demand: model time per row plus a
  fixed cost per batch (kernel launches, and Ray's per-call overhead when on Ray).
- **Postgres**: ``pg_servers`` servers (1 = one instance; Citus workers raise it, since the caches
  distribute by digest). Demand: the cache rows it absorbs plus the statements it runs.

Duplicate work (two front-ends computing the same inputs) multiplies the per-row demands by
``duplicate_factor`` (total model calls / distinct inputs) while the useful output stays the
distinct rows. Throughput is the exact-MVA solution with Seidmann's multi-server approximation
(a c-server station of demand D = a queue of demand D/c plus a delay of D(c-1)/c); its asymptote is
the operational-law bound ``min_k servers_k / D_k``, and the station reaching it is the bottleneck.
When everything shares one host (this machine), ``host_cores`` adds the shared-CPU bound
``host_cores / (sum of CPU demands)``.

``claim_lanes`` adds SieveDB's own serialization point. A batch claims its inputs (advisory locks
keyed by the digest's first byte, planner/batches.py) from before the model runs until its cache
rows commit, so that two front-ends never compute the same input; a batch larger than
``SMALL_CLAIM`` takes its whole lane of buckets. Across every front-end, at most ``claim_lanes``
large batches of one model are between claim and commit at once. The bound is
``claim_lanes / (what one batch holds a lane for)``: its front-end rows, its model run and its
cache write, all of a query's batches counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

FRONTEND = "front-end CPU"
MODEL = "model replicas"
POSTGRES = "Postgres writes"
HOST = "host CPU (shared)"
CLAIMS = "claim lanes"

# What to change once a station limits throughput (docs/SCALING.md expands each line).
REMEDIES = {
    FRONTEND: "add front-ends behind the TCP load balancer (catalog by LISTEN/NOTIFY, cancels forwarded)",
    MODEL: "add GPUs: Ray nodes (replicas follow the load up to --ray-max-replicas)",
    POSTGRES: "spread cache writes: Citus, caches distributed by digest (or a bigger instance / faster WAL)",
    HOST: "move components off the shared host (Postgres, Ray workers, front-ends on their own machines)",
    CLAIMS: "more claim lanes per model (planner.site_pass.LANES), so more batches of one model run at once",
}


@dataclass(frozen=True)
class Costs:
    """Per-component costs, in seconds of one core (or one device) unless the name says otherwise."""

    fe_s_per_statement: float  # front-end CPU to receive, plan and answer one model statement
    fe_s_per_row: float  # front-end CPU per materialized row (digest, tensors, cache COPY)
    fe_s_per_batch: float  # front-end CPU per batch sent to the backend (Ray: the remote call)
    model_s_per_row: float  # device time per row at the batch size used
    model_s_per_batch: float  # fixed device/actor time per batch (Ray's per-call overhead on Ray)
    pg_rows_per_s: float  # cache rows one Postgres server absorbs per second (COPY + commit)
    pg_s_per_statement: float = 0.0  # Postgres time per statement besides the cache writes

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            # An infinite pg_rows_per_s stands for "writes cost nothing" (what-if plans).
            finite = math.isfinite(value) or (name == "pg_rows_per_s" and value == math.inf)
            if not (isinstance(value, int | float) and finite and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if self.pg_rows_per_s <= 0:
            raise ValueError("pg_rows_per_s must be > 0")


@dataclass(frozen=True)
class Workload:
    rows_per_query: int = 10_000  # cold (uncached) inputs one query materializes
    batch_rows: int = 1024
    duplicate_factor: float = 1.0  # model calls / distinct inputs (1.0: work split perfectly)
    clients: int = 64  # queries in flight at once
    think_s: float = 0.0  # a client's pause between queries

    def __post_init__(self) -> None:
        if self.rows_per_query < 1 or self.batch_rows < 1 or self.clients < 1:
            raise ValueError("rows_per_query, batch_rows and clients must be >= 1")
        if self.duplicate_factor < 1.0:
            raise ValueError("duplicate_factor is calls / distinct inputs: it cannot be below 1")
        if self.think_s < 0:
            raise ValueError("think_s must be >= 0")

    @property
    def batches(self) -> int:
        return math.ceil(self.rows_per_query * self.duplicate_factor / self.batch_rows)


@dataclass(frozen=True)
class Cluster:
    frontends: int = 1
    gpus: int = 1
    pg_servers: float = 1.0
    frontend_cores: float = 1.0  # one asyncio process per front-end
    host_cores: float | None = None  # everything on one host with this many cores (None: separate)
    model_on_host: bool = True  # with host_cores: replicas are CPU processes on that host
    claim_lanes: int | None = None  # large batches of one model in flight at once (None: unbounded)

    def __post_init__(self) -> None:
        if self.frontends < 1 or self.gpus < 1 or self.pg_servers <= 0 or self.frontend_cores <= 0:
            raise ValueError("frontends, gpus, pg_servers and frontend_cores must be positive")
        if self.host_cores is not None and self.host_cores <= 0:
            raise ValueError("host_cores must be > 0")
        if self.claim_lanes is not None and self.claim_lanes < 1:
            raise ValueError("claim_lanes must be >= 1")


@dataclass(frozen=True)
class Station:
    name: str
    servers: float
    demand_s: float  # service demand of one query, seconds

    @property
    def capacity_qps(self) -> float:
        return math.inf if self.demand_s == 0 else self.servers / self.demand_s


@dataclass(frozen=True)
class Prediction:
    cluster: Cluster
    rows_per_s: float  # distinct rows materialized per second, at the workload's clients
    bound_rows_per_s: float  # the asymptote (infinitely many clients)
    bottleneck: str
    utilization: dict[str, float]  # station -> share of its servers busy at rows_per_s
    capacity_rows_per_s: dict[str, float]  # station -> rows/s it alone would allow

    @property
    def remedy(self) -> str:
        return REMEDIES[self.bottleneck]


def stations(costs: Costs, workload: Workload, cluster: Cluster) -> list[Station]:
    """The three stations and each one's demand per query."""
    calls = workload.rows_per_query * workload.duplicate_factor
    batches = workload.batches
    return [
        Station(
            FRONTEND,
            cluster.frontends * cluster.frontend_cores,
            costs.fe_s_per_statement + calls * costs.fe_s_per_row + batches * costs.fe_s_per_batch,
        ),
        Station(MODEL, cluster.gpus, calls * costs.model_s_per_row + batches * costs.model_s_per_batch),
        Station(
            POSTGRES,
            cluster.pg_servers,
            calls / costs.pg_rows_per_s + (1 + batches) * costs.pg_s_per_statement,
        ),
    ]


def host_bound_qps(costs: Costs, workload: Workload, cluster: Cluster) -> float:
    """Queries/s the shared host's cores allow when every station burns its CPU (inf: no host)."""
    if cluster.host_cores is None:
        return math.inf
    demand = sum(
        s.demand_s for s in stations(costs, workload, cluster) if s.name != MODEL or cluster.model_on_host
    )
    return math.inf if demand == 0 else cluster.host_cores / demand


def claims_bound_qps(costs: Costs, workload: Workload, cluster: Cluster) -> float:
    """Queries/s the claim lanes allow: each lane is held per batch for its rows' front-end work,
    its model run and its cache write (inf: lanes not modelled)."""
    if cluster.claim_lanes is None:
        return math.inf
    calls, batches = workload.rows_per_query * workload.duplicate_factor, workload.batches
    hold = calls * (costs.fe_s_per_row + costs.model_s_per_row + 1.0 / costs.pg_rows_per_s) + batches * (
        costs.fe_s_per_batch + costs.model_s_per_batch + costs.pg_s_per_statement
    )
    return math.inf if hold == 0 else cluster.claim_lanes / hold


def mva_throughput(network: list[Station], clients: int, think_s: float = 0.0) -> float:
    """Queries/s of a closed network with ``clients`` customers (exact MVA, Seidmann's multi-server)."""
    queue_d = [s.demand_s / s.servers for s in network]
    delay = think_s + sum(s.demand_s * max(s.servers - 1, 0) / s.servers for s in network)
    lengths = [0.0] * len(network)
    throughput = 0.0
    for n in range(1, clients + 1):
        residence = [d * (1 + q) for d, q in zip(queue_d, lengths, strict=True)]
        cycle = delay + sum(residence)
        if cycle == 0:
            return math.inf
        throughput = n / cycle
        lengths = [throughput * r for r in residence]
    return throughput


def predict(costs: Costs, workload: Workload, cluster: Cluster) -> Prediction:
    """Throughput of ``cluster`` under ``workload``, its bottleneck and each station's load."""
    network = stations(costs, workload, cluster)
    capacities = {s.name: s.capacity_qps for s in network}
    host_qps = host_bound_qps(costs, workload, cluster)
    if cluster.host_cores is not None:
        capacities[HOST] = host_qps
    claims_qps = claims_bound_qps(costs, workload, cluster)
    if cluster.claim_lanes is not None:
        capacities[CLAIMS] = claims_qps
    bound_qps = min(capacities.values())
    # Ties go to the earlier station: the cheaper one to fix comes first in REMEDIES' order.
    bottleneck = min(capacities, key=lambda name: capacities[name])
    qps = min(mva_throughput(network, workload.clients, workload.think_s), host_qps, claims_qps)
    rows = workload.rows_per_query
    return Prediction(
        cluster=cluster,
        rows_per_s=qps * rows,
        bound_rows_per_s=bound_qps * rows,
        bottleneck=bottleneck,
        utilization={name: (qps / cap if cap != math.inf else 0.0) for name, cap in capacities.items()},
        capacity_rows_per_s={name: cap * rows for name, cap in capacities.items()},
    )


def grow(cluster: Cluster, bottleneck: str) -> Cluster:
    """The cluster with its bottleneck resource doubled (what an operator adds next)."""
    if bottleneck == FRONTEND:
        return replace(cluster, frontends=cluster.frontends * 2)
    if bottleneck == MODEL:
        return replace(cluster, gpus=cluster.gpus * 2)
    if bottleneck == POSTGRES:
        return replace(cluster, pg_servers=cluster.pg_servers * 2)
    if bottleneck == CLAIMS:
        return replace(cluster, claim_lanes=2 * (cluster.claim_lanes or 1))
    return replace(cluster, host_cores=None)


def scale_path(costs: Costs, workload: Workload, start: Cluster, steps: int = 8) -> list[Prediction]:
    """Predictions along the path that doubles whatever limits throughput, ``steps`` times."""
    path = [predict(costs, workload, start)]
    for _ in range(steps):
        path.append(predict(costs, workload, grow(path[-1].cluster, path[-1].bottleneck)))
    return path


def units_until_shift(costs: Costs, workload: Workload, cluster: Cluster, resource: str) -> int | None:
    """How many front-ends (FRONTEND) or GPUs (MODEL) it takes before ``resource`` stops being the
    bottleneck, all else as in ``cluster``: where adding more of it stops paying (None: never)."""
    field = {FRONTEND: "frontends", MODEL: "gpus"}[resource]
    probe = predict(costs, workload, cluster)
    others = [cap for name, cap in probe.capacity_rows_per_s.items() if name != resource]
    ceiling = min(others, default=math.inf)
    per_unit = probe.capacity_rows_per_s[resource] / getattr(cluster, field)
    if ceiling == math.inf:
        return None
    return max(1, math.ceil(ceiling / per_unit))


def sized_cluster(costs: Costs, workload: Workload, gpus: int, base: Cluster | None = None) -> Cluster:
    """The fewest front-ends and Postgres servers (whole ones) that leave ``gpus`` replicas the
    bottleneck: how to provision around M GPUs."""
    probe_cluster = replace(base or Cluster(), frontends=1, gpus=gpus, pg_servers=1.0)
    caps = predict(costs, workload, probe_cluster).capacity_rows_per_s
    need = caps[MODEL]
    frontends = max(1, math.ceil(need / caps[FRONTEND] - 1e-9)) if caps[FRONTEND] < math.inf else 1
    pg = max(1, math.ceil(need / caps[POSTGRES] - 1e-9)) if caps[POSTGRES] < math.inf else 1
    return replace(probe_cluster, frontends=frontends, pg_servers=float(pg))
