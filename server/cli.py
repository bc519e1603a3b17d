"""``sievedb`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from server import messages
from server.app import ConfigError, ServerConfig, SieveServer

log = logging.getLogger("sievedb.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sievedb", description="SieveDB: SQL over unstructured data")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the PostgreSQL-wire server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5433, help="TCP port (default 5433; 0 picks a free one)")
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".sievedb"),
        help="where the embedded Postgres keeps its data (default .sievedb/)",
    )
    serve.add_argument("--postgres-dsn", help="use this external Postgres instead of the embedded one")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate: enables TLS for clients")
    serve.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    serve.add_argument(
        "--tls-require",
        action="store_true",
        help="refuse clients that do not use TLS (FATAL 28000, as a hostssl-only pg_hba.conf would)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=100,
        help="client sessions at once; more are refused with 53300 'too many clients' (default 100)",
    )
    serve.add_argument(
        "--authentication-timeout",
        type=float,
        default=60.0,
        help="seconds a client has from connecting to its first ReadyForQuery (default 60)",
    )
    serve.add_argument(
        "--max-message-bytes",
        type=int,
        default=messages.FRAME_MAX_LEN,
        help="largest message an authenticated client may send "
        f"(default {messages.FRAME_MAX_LEN}, Postgres's own limit)",
    )
    serve.add_argument(
        "--embedded-password-file",
        type=Path,
        help="file holding the embedded cluster's superuser password (enables SCRAM); "
        "SIEVEDB_PASSWORD does the same",
    )
    serve.add_argument(
        "--allow-trust-remote",
        action="store_true",
        help="listen beyond loopback even though the backing Postgres admits relayed clients "
        "without a password (or its pg_hba.conf cannot be read)",
    )
    serve.add_argument(
        "--max-backend-connections", type=int, default=300, help="max_connections of the embedded Postgres"
    )
    serve.add_argument(
        "--models-dir",
        type=Path,
        default=Path("models"),
        help="where relative paths of CREATE FUNCTION ... LANGUAGE onnx point (default models/)",
    )
    serve.add_argument(
        "--max-model-bytes",
        type=int,
        default=2 << 30,
        help="largest model file CREATE FUNCTION ... LANGUAGE onnx accepts (default 2 GiB)",
    )
    serve.add_argument(
        "--inference-workers",
        type=int,
        default=None,
        help="inference worker processes (default: one per GPU, else cores - 1)",
    )
    serve.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="serve the web face (/label, /status, /metrics) on this port (default: off; 0 picks one)",
    )
    serve.add_argument("--http-host", default="127.0.0.1", help="address of the web face (default 127.0.0.1)")
    serve.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS") or None,
        help="run inference on this Ray cluster (default $RAY_ADDRESS; unset: the local worker pool)",
    )
    serve.add_argument(
        "--ray-max-replicas",
        type=int,
        default=None,
        help="most Ray actors per model (default: one per GPU of the cluster, else per 2 CPUs)",
    )
    serve.add_argument(
        "--advertise-address",
        default=None,
        help="host:port other front-ends over the same Postgres reach this one at, to forward "
        "CancelRequests (default: --host and the bound port)",
    )
    serve.add_argument("--log-level", default=os.environ.get("SIEVEDB_LOG_LEVEL", "INFO"))
    serve.add_argument(
        "--demo",
        action="store_true",
        help="once listening, load the demo data, models and model functions (idempotent)",
    )
    demo = sub.add_parser("demo", help="install the demo into a running SieveDB server")
    demo.add_argument(
        "--dsn",
        default="postgresql://postgres@127.0.0.1:5433/postgres",
        help="the SieveDB server to install into (default postgresql://postgres@127.0.0.1:5433/postgres)",
    )
    demo.add_argument(
        "--models-dir",
        type=Path,
        default=Path("models"),
        help="that server's --models-dir: the demo writes its ONNX files there (default models/)",
    )
    demo.add_argument("--log-level", default=os.environ.get("SIEVEDB_LOG_LEVEL", "INFO"))
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    password = os.environ.get("SIEVEDB_PASSWORD") or None
    if args.embedded_password_file:
        password = args.embedded_password_file.read_text().strip()
    return ServerConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        postgres_dsn=args.postgres_dsn,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        embedded_password=password,
        allow_trust_remote=args.allow_trust_remote,
        tls_require=args.tls_require,
        max_connections=args.max_connections,
        authentication_timeout=args.authentication_timeout,
        max_message_bytes=args.max_message_bytes,
        max_backend_connections=args.max_backend_connections,
        models_dir=args.models_dir,
        max_model_bytes=args.max_model_bytes,
        inference_workers=args.inference_workers,
        http_port=args.http_port,
        http_host=args.http_host,
        ray_address=args.ray_address,
        ray_max_replicas=args.ray_max_replicas,
        advertise_address=args.advertise_address,
    )


async def serve(config: ServerConfig, demo: bool = False) -> None:
    server = SieveServer(config)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task] = []

    def on_signal(signame: str) -> None:
        if not stopping:
            log.info("received %s: shutting down", signame)
            stopping.append(loop.create_task(server.stop()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    demo_task = None
    if demo:
        from server.demo import start_for_server

        demo_task = start_for_server(server)
    try:
        await server.serve_until_stopped()
    finally:
        if demo_task is not None:
            demo_task.cancel()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.command == "demo":
        from server.demo import run_standalone

        return asyncio.run(run_standalone(args.dsn, args.models_dir))
    try:
        config = config_from_args(args)
        import uvloop

        uvloop.run(serve(config, demo=args.demo))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
