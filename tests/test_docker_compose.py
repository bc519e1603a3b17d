"""The docker/ deployment is coherent with the code it deploys.

No Docker engine runs here, so the compose file and the Dockerfile are parsed and checked against
the real CLI parser, the DSN parser and pyproject.toml; the container health check script is run
against a real SieveDB server.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib

import pytest
import yaml

from server.cli import build_parser, config_from_args
from storage.target import parse_dsn
from tests.support.servers import REPO, free_port

DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
HEALTHCHECK_SCRIPT = DOCKER / "healthcheck.py"

FRONTENDS = ("sievedb-fe1", "sievedb-fe2")
SIEVE_SERVICES = ("sievedb", "sievedb-gpu", *FRONTENDS)
RAY_NODES = ("ray-head", "ray-worker")
RAY_FRONTEND_SCRIPT = DOCKER / "ray-frontend.sh"
_VAR = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR}`` / ``${VAR:-default}`` substitution (with an empty environment)."""
    env = env or {}

    def sub(match: re.Match) -> str:
        name, default = match["name"], match["default"]
        if env.get(name):
            return env[name]
        assert default is not None, f"${{{name}}} has no default: the compose file needs it set"
        return default

    return _VAR.sub(sub, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def instruction(name: str) -> list[str]:
    return [args for keyword, args in dockerfile_instructions() if keyword == name]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def published(service: dict) -> list[tuple[int, int]]:
    """(host port, container port) of each ``ports`` entry."""
    pairs = []
    for entry in service.get("ports", []):
        host, _, container = interpolate(str(entry)).rpartition(":")
        pairs.append((int(host), int(container.split("/")[0])))
    return pairs


def parse_serve(command: list[str]):
    return build_parser().parse_args(["serve", *[interpolate(str(arg)) for arg in command]])


# -- compose file ---------------------------------------------------------------------------------


def test_services_exist(services: dict) -> None:
    assert {"postgres", "sievedb", "sievedb-gpu", *RAY_NODES, *FRONTENDS, "sievedb-lb"} <= set(services)
    assert services["postgres"]["image"] == "postgres:18"
    for name in (*SIEVE_SERVICES, *RAY_NODES):
        build = services[name]["build"]
        assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert (COMPOSE_FILE.parent / build["context"]).resolve() == REPO


def test_sievedb_command_parses_with_real_cli_and_targets_postgres_service(services: dict) -> None:
    pg_env = {k: interpolate(str(v)) for k, v in services["postgres"]["environment"].items()}
    for name in SIEVE_SERVICES:
        args = parse_serve(services[name]["command"])
        assert args.command == "serve"
        assert args.host == "0.0.0.0"
        assert args.port == 5433
        assert args.postgres_dsn, f"{name} must use the postgres service, not an embedded cluster"
        target = parse_dsn(args.postgres_dsn)
        assert target.host == "postgres" and target.host in services
        assert target.port == 5432
        assert target.user == pg_env["POSTGRES_USER"]
        assert target.password == pg_env["POSTGRES_PASSWORD"]
        assert target.database == pg_env["POSTGRES_DB"]
        config = config_from_args(args)
        assert config.postgres_dsn == args.postgres_dsn and config.host == "0.0.0.0"


def test_password_comes_from_env_with_default(services: dict) -> None:
    raw = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert raw.startswith("${POSTGRES_PASSWORD"), "the password must be settable from the environment"
    assert interpolate(raw) == "sievedb"
    assert interpolate(raw, {"POSTGRES_PASSWORD": "pw2"}) == "pw2"
    dsn = next(a for a in services["sievedb"]["command"] if str(a).startswith("postgresql://"))
    assert parse_dsn(interpolate(dsn, {"POSTGRES_PASSWORD": "pw2"})).password == "pw2"


def test_ports_published(services: dict) -> None:
    assert published(services["sievedb"]) == [(5433, 5433)]
    assert published(services["sievedb-gpu"]) == [(5434, 5433)]
    hosts = [host for name in services for host, _ in published(services[name])]
    assert len(hosts) == len(set(hosts)), "two services publish the same host port"
    # Postgres itself stays on the compose network.
    assert "ports" not in services["postgres"]
    for name in SIEVE_SERVICES:
        for _, container in published(services[name]):
            assert container == parse_serve(services[name]["command"]).port


def test_healthchecks(services: dict) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert check.get("interval") and check.get("retries", 0) >= 3
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    for name in SIEVE_SERVICES:
        test = services[name]["healthcheck"]["test"]
        assert test[1:3] == ["python", "/usr/local/lib/sievedb/healthcheck.py"]
        assert int(test[3]) == parse_serve(services[name]["command"]).port
    copies = [shlex.split(args) for args in instruction("COPY")]
    assert ["docker/healthcheck.py", "/usr/local/lib/sievedb/healthcheck.py"] in copies


def test_depends_on_healthy_postgres(services: dict) -> None:
    for name in SIEVE_SERVICES:
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for name in ("sievedb", "sievedb-gpu"):
        assert set(services[name]["depends_on"]) == {"postgres"}


def test_named_volumes_declared(compose: dict, services: dict) -> None:
    declared = set(compose.get("volumes") or {})
    used = {}
    for name, service in services.items():
        for entry in service.get("volumes", []):
            source, target = entry.split(":")[:2]
            assert not source.startswith((".", "/")), f"{name} bind-mounts {source}; use a named volume"
            used[source] = (name, target)
    assert set(used) == declared
    assert used["pgdata"] == ("postgres", "/var/lib/postgresql")  # postgres:18's VOLUME
    for name in SIEVE_SERVICES:
        data_dir = str(parse_serve(services[name]["command"]).data_dir)
        assert any(svc == name and target == data_dir for svc, target in used.values())


def test_gpu_profile_requests_nvidia(services: dict, pyproject: dict) -> None:
    gpu = services["sievedb-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    extras = gpu["build"]["args"]["EXTRAS"]
    assert extras in pyproject["project"]["optional-dependencies"]
    assert any(arg.split("=")[0] == "EXTRAS" for arg in instruction("ARG"))
    for name in ("postgres", "sievedb"):
        assert "profiles" not in services[name], f"{name} must start without a profile"
        assert "deploy" not in services[name]


# -- the Ray profile: a Ray head and worker, two front-ends, a TCP load balancer ------------------


def ray_start_params(args: list[str]) -> dict:
    """``ray start``'s own (click) parser on ``args``: unknown or malformed options raise."""
    scripts = pytest.importorskip("ray.scripts.scripts")
    ctx = scripts.start.make_context("ray start", [interpolate(str(a)) for a in args])
    return ctx.params


def head_address(services: dict) -> str:
    return f"ray-head:{ray_start_params(services['ray-head']['command'])['port']}"


def test_ray_nodes_run_real_ray_start_options(services: dict, pyproject: dict) -> None:
    for name in RAY_NODES:
        node = services[name]
        assert node["entrypoint"] == ["ray", "start"]
        assert node["profiles"] == ["ray"]
        assert "ray" in node["build"]["args"]["EXTRAS"].split(",")
        assert "ray" in pyproject["project"]["optional-dependencies"]
        params = ray_start_params(node["command"])
        assert params["block"], f"{name}: without --block the container exits once Ray has started"
        assert node["healthcheck"]["test"][1:3] == ["ray", "health-check"]
    head = ray_start_params(services["ray-head"]["command"])
    assert head["head"] and head["port"] == 6379 and head["num_cpus"] == 0
    worker = ray_start_params(services["ray-worker"]["command"])
    assert not worker["head"] and worker["address"] == head_address(services)
    assert services["ray-worker"]["depends_on"] == {"ray-head": {"condition": "service_healthy"}}
    with pytest.raises(Exception, match="no-such-option"):
        ray_start_params(["--head", "--no-such-option"])


def test_ray_image_is_the_sievedb_image_with_the_extra(services: dict) -> None:
    images = {services[name]["image"] for name in (*RAY_NODES, *FRONTENDS)}
    assert images == {"sievedb:ray"}
    builds = [services[name]["build"] for name in (*RAY_NODES, *FRONTENDS)]
    assert all(build == builds[0] for build in builds)
    for name in RAY_NODES:
        assert services[name]["shm_size"], (
            f"{name}: Ray's object store needs more than Docker's 64 MB /dev/shm"
        )


def test_frontends_share_the_postgres_and_the_ray_cluster(services: dict) -> None:
    dsns, advertised = set(), set()
    for name in FRONTENDS:
        service = services[name]
        args = parse_serve(service["command"])
        dsns.add(args.postgres_dsn)
        assert args.ray_address == head_address(services)
        assert service["environment"]["RAY_ADDRESS"] == args.ray_address
        assert args.advertise_address == f"{name}:{args.port}", "peers must reach it by its service name"
        advertised.add(args.advertise_address)
        assert config_from_args(args).ray_address == args.ray_address
        assert service["depends_on"]["ray-head"] == {"condition": "service_healthy"}
        assert service["profiles"] == ["ray"]
    assert dsns == {parse_serve(services["sievedb"]["command"]).postgres_dsn}
    assert len(advertised) == len(FRONTENDS)


def mounts(service: dict) -> dict[str, str]:
    """target path -> named volume."""
    return {entry.split(":")[1]: entry.split(":")[0] for entry in service.get("volumes", [])}


def test_every_ray_node_reads_the_models_at_the_frontends_path(services: dict) -> None:
    # Ray replicas open a model at the path its front-end resolved under --models-dir.
    (models_dir,) = {str(parse_serve(services[name]["command"]).models_dir) for name in FRONTENDS}
    assert models_dir.startswith("/"), "a relative --models-dir resolves differently on each node"
    volume = mounts(services[FRONTENDS[0]]).get(models_dir)
    assert volume, f"{models_dir} must be a named volume shared with the Ray nodes"
    for name in (*FRONTENDS, *RAY_NODES):
        assert mounts(services[name]).get(models_dir) == volume, (
            f"{name} does not mount {volume} at {models_dir}"
        )
    # The image creates the directory for the non-root user, so the fresh volume takes its owner.
    created = [run for run in instruction("RUN") if models_dir in run]
    assert created and "-o sievedb" in created[0], "the image must create the models directory for sievedb"


def test_frontends_enter_through_the_ray_node_script(services: dict) -> None:
    (entry,) = {tuple(services[name]["entrypoint"]) for name in FRONTENDS}
    copies = [shlex.split(args) for args in instruction("COPY")]
    assert ["docker/ray-frontend.sh", entry[0]] in copies
    assert RAY_FRONTEND_SCRIPT.stat().st_mode & 0o111, "COPY keeps the mode: the script must be executable"
    mode = subprocess.run(
        ["git", "ls-files", "-s", str(RAY_FRONTEND_SCRIPT)], cwd=REPO, capture_output=True, text=True
    ).stdout
    assert mode.startswith("100755"), f"git must record ray-frontend.sh as executable: {mode!r}"
    # The script's `ray start` line is a real one, joining the cluster with no resources of its own.
    line = next(ln for ln in RAY_FRONTEND_SCRIPT.read_text().splitlines() if ln.startswith("ray start"))
    argv = shlex.split(line.replace("$RAY_ADDRESS", "ray-head:6379"))[2:]
    params = ray_start_params(argv)
    assert params["address"] == "ray-head:6379" and params["num_cpus"] == 0 and params["num_gpus"] == 0


def stub_bin(tmp_path, name: str) -> None:
    stub = tmp_path / name
    stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "$STUB_LOG"\n')
    stub.chmod(0o755)


def test_ray_frontend_script_joins_then_serves_with_its_arguments(tmp_path) -> None:
    for name in ("ray", "sievedb"):
        stub_bin(tmp_path, name)
    log = tmp_path / "calls.log"
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "STUB_LOG": str(log), "RAY_ADDRESS": "ray-head:6379"}
    done = subprocess.run(
        ["sh", str(RAY_FRONTEND_SCRIPT), "--port", "5433"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        "ray start --address=ray-head:6379 --num-cpus=0 --num-gpus=0 --disable-usage-stats",
        "sievedb serve --port 5433",
    ]
    env.pop("RAY_ADDRESS")
    log.unlink()
    done = subprocess.run(["sh", str(RAY_FRONTEND_SCRIPT)], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "RAY_ADDRESS" in done.stderr
    assert not log.exists(), "nothing may start without the Ray address"


def haproxy_servers(compose: dict) -> tuple[int, list[str]]:
    """(bind port, server addresses) of the load balancer's configuration."""
    text = compose["configs"]["haproxy"]["content"]
    bind = re.search(r"^\s*bind\s+\S*:(\d+)", text, re.M)
    servers = re.findall(r"^\s*server\s+\S+\s+(\S+)", text, re.M)
    assert bind and "mode tcp" in text
    return int(bind[1]), servers


def test_load_balancer_fronts_each_frontend(compose: dict, services: dict) -> None:
    lb = services["sievedb-lb"]
    bind, servers = haproxy_servers(compose)
    assert sorted(servers) == sorted(
        parse_serve(services[name]["command"]).advertise_address for name in FRONTENDS
    )
    assert [c for _, c in published(lb)] == [bind]
    assert published(lb)[0][0] == 5435
    (mount,) = lb["configs"]
    assert mount["source"] == "haproxy" and mount["target"].endswith("haproxy.cfg")
    assert set(lb["depends_on"]) == set(FRONTENDS)


# -- Dockerfile -----------------------------------------------------------------------------------


def test_dockerfile_entrypoint_is_console_script(pyproject: dict) -> None:
    (entrypoint,) = instruction("ENTRYPOINT")
    script, *rest = exec_form(entrypoint)
    assert pyproject["project"]["scripts"][script] == "server.cli:main"
    assert rest == ["serve"]
    (cmd,) = instruction("CMD")
    args = build_parser().parse_args([*rest, *exec_form(cmd)])
    assert args.port == 5433


def test_dockerfile_expose_matches_published_port(services: dict) -> None:
    exposed = {int(p.split("/")[0]) for args in instruction("EXPOSE") for p in args.split()}
    containers = {c for name in SIEVE_SERVICES for _, c in published(services[name])}
    assert exposed == containers == {5433}


def test_dockerfile_base_user_and_healthcheck(pyproject: dict) -> None:
    (base,) = instruction("FROM")
    assert base == "python:3.11-slim"
    users = instruction("USER")
    assert users and users[-1] not in ("root", "0")
    (health,) = instruction("HEALTHCHECK")
    assert "/usr/local/lib/sievedb/healthcheck.py" in health
    runs = " ".join(instruction("RUN"))
    assert "pip install" in runs
    # Everything setuptools packages (and the readme pyproject names) is copied before pip runs.
    copied = {shlex.split(args)[0].rstrip("/") for args in instruction("COPY")}
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert package in copied and (REPO / package).is_dir(), package
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= {
        src for args in instruction("COPY") for src in shlex.split(args)[:-1]
    }


# -- the health check script itself ---------------------------------------------------------------


def run_healthcheck(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK_SCRIPT), str(port)], capture_output=True, text=True, timeout=30
    )


def test_healthcheck_script_passes_on_live_server(sieve_server) -> None:
    done = run_healthcheck(sieve_server.port)
    assert done.returncode == 0, done.stderr


def test_healthcheck_script_fails_on_closed_port() -> None:
    done = run_healthcheck(free_port())
    assert done.returncode == 1
    assert "unhealthy" in done.stderr
