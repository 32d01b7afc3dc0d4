"""`mesh`: one command for every process of the mesh.

    mesh router  --port 50051 [--http-port 8080] [--etcd http://HOST:2379 --advertise-address HOST:PORT]
    mesh worker  --router HOST:PORT[,HOST:PORT...] | --router dns:///NAME:PORT | --etcd http://HOST:2379
                 --bundle B --machine-profile P --backend NAME
    mesh facade  --port 8080 --router HOST:PORT[,...] | dns:///NAME:PORT  (or --etcd URL)
    mesh up      a router, the HTTP facade and one real-model worker on localhost

Bad flags end with a usage message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("mesh")

LOG_LEVELS = ("debug", "info", "warning", "error")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, json_logs: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class ConfigurationError(Exception):
    """A setting from the environment that cannot be used; reported, exit status 2."""


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0-65535")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} must be a positive, finite number of seconds")
    return value


def non_negative_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of milliseconds") from None
    if not (math.isfinite(value) and 0 <= value <= 1000):
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1000 milliseconds")
    return value


def existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' is not a directory")
    return path


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-l", "--log-level", choices=LOG_LEVELS, default="info", help="log level")
    parser.add_argument("--json-logs", action="store_true", help="log one JSON object per line")


def add_router_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--port", type=port_number, default=50051, help="gRPC port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--router-id", default="", help="stable replica name (default: generated)")
    parser.add_argument("--bundles-dir", type=existing_dir, help="directory of bundle YAML files")
    parser.add_argument("--models-dir", type=existing_dir, help="directory of model YAML files")
    parser.add_argument(
        "--http-port", type=port_number, help="also serve the HTTP facade in this process on this port"
    )
    parser.add_argument("--http-host", default=None, help="address for the HTTP facade (default: --host)")
    parser.add_argument(
        "--silence-timeout-s",
        type=positive_seconds,
        default=3.0,
        help="a worker silent this long leaves routing (default 3)",
    )
    parser.add_argument(
        "--write-coalesce-ms",
        type=non_negative_ms,
        default=2.0,
        help="under load (other tasks open to a worker), how long a task waits for others to share its "
        "stream write: more throughput, up to this much latency at moderate load; 0 writes at once (default 2)",
    )
    parser.add_argument(
        "--drain-grace-s",
        type=positive_seconds,
        default=10.0,
        help="time in-flight requests get on shutdown (default 10)",
    )
    from mesh.ha.flags import add_advertise_argument, add_etcd_arguments

    add_etcd_arguments(
        parser,
        what="the router replicas share state through; without it one router keeps its state in memory",
    )
    add_advertise_argument(parser)
    parser.add_argument(
        "--lease-ttl-s",
        type=positive_seconds,
        default=5.0,
        help="TTL of this replica's etcd lease: a crashed replica's registrations and leadership "
        "end this long after it dies (default 5)",
    )


def router_config(args: argparse.Namespace):
    from mesh.config_api import ConfigServiceConfig, config_store_dir_from_env
    from mesh.ha import ReplicaConfig
    from mesh.router import RouterConfig
    from mesh.services import RegistrySettings

    try:
        config_api = ConfigServiceConfig.from_env()
        config_store_dir = config_store_dir_from_env()
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    return RouterConfig(
        config_api=config_api,
        config_store_dir=config_store_dir,
        host=args.host,
        port=args.port,
        router_id=args.router_id,
        bundles_dir=args.bundles_dir,
        models_dir=args.models_dir,
        registry=RegistrySettings(
            silence_timeout_s=args.silence_timeout_s, write_coalesce_s=args.write_coalesce_ms / 1000.0
        ),
        drain_grace_s=args.drain_grace_s,
        etcd_url=args.etcd,
        store_prefix=args.etcd_prefix,
        advertise_address=args.advertise_address or "",
        replica=ReplicaConfig(lease_ttl_s=args.lease_ttl_s),
    )


async def _wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _start_facade_in_router(router, host: str, port: int):
    """Serve the HTTP facade on the router's own dispatcher; returns its runner."""
    from http_facade import FacadeConfig, create_app, start_http_server

    app = create_app(
        router.service,
        FacadeConfig.from_env(),
        config_api=router.config_service,
        pools_api=router.pools.service,
    )
    return await start_http_server(app, host, port)


async def run_router(args: argparse.Namespace) -> int:
    from mesh.errors import MeshError
    from mesh.router import Router

    try:
        router = Router(router_config(args))
    except (MeshError, ConfigurationError, ValueError) as error:
        log.error("cannot start: %s", error)
        return 2
    try:
        await router.start()
    except OSError as error:
        log.error("cannot start: %s", error)
        return 1
    http_runner = None
    try:
        if args.http_port is not None:
            http_host = args.http_host or args.host
            http_runner = await _start_facade_in_router(router, http_host, args.http_port)
            log.info("HTTP facade on http://%s:%d", http_host, args.http_port)
        print(f"mesh router {router.router_id} listening on {router.address}", flush=True)
        await _wait_for_signal()
        log.info("shutting down: draining")
        await router.drain()
    finally:
        if http_runner is not None:
            await http_runner.cleanup()
        await router.stop()
    return 0


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=port_number, default=50051, help="router gRPC port (default 50051)")
    parser.add_argument("--http-port", type=port_number, default=8080, help="HTTP facade port (default 8080)")
    parser.add_argument(
        "--backend",
        default="sentence-transformers",
        help="worker backend (default sentence-transformers: the real model on CPU)",
    )
    parser.add_argument(
        "--machine-profile", default="cpu", help="machine profile of the worker (default cpu)"
    )
    parser.add_argument("--bundle", default="default", help="bundle of the worker (default 'default')")
    parser.add_argument(
        "--worker-ready-timeout-s",
        type=positive_seconds,
        default=300.0,
        help="time the worker gets to register and load its model (default 300)",
    )


def _stop_process(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM the process we started (by its PID), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


async def _wait_for_worker(router, process: subprocess.Popen, timeout_s: float) -> bool:
    """Wait until a worker registered with a loaded model, or the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        for view in router.registry.snapshot():
            if view.healthy and any(load.state.value == "loaded" for load in view.models.values()):
                return True
        await asyncio.sleep(0.2)
    return False


async def run_up(args: argparse.Namespace) -> int:
    from mesh.router import Router, RouterConfig

    router = Router(RouterConfig(host="127.0.0.1", port=args.port, router_id="local"))
    try:
        await router.start()
    except OSError as error:
        log.error("cannot start the router: %s", error)
        return 1
    http_runner = None
    worker: subprocess.Popen | None = None
    try:
        http_runner = await _start_facade_in_router(router, "127.0.0.1", args.http_port)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        worker = subprocess.Popen(  # noqa: ASYNC220 - fork and exec only; the wait is polled
            [
                sys.executable,
                "-m",
                "worker_agent",
                "--router",
                router.address,
                "--backend",
                args.backend,
                "--bundle",
                args.bundle,
                "--machine-profile",
                args.machine_profile,
                "--worker-id",
                "local-worker-0",
                "--preload",
                "--log-level",
                args.log_level,
            ],
            env=env,
        )
        waiter = asyncio.create_task(_wait_for_worker(router, worker, args.worker_ready_timeout_s))
        signal_wait = asyncio.create_task(_wait_for_signal())
        done, _ = await asyncio.wait({waiter, signal_wait}, return_when=asyncio.FIRST_COMPLETED)
        if signal_wait in done:
            waiter.cancel()
            return 0
        if not waiter.result():
            log.error("the worker did not become ready (exit status %s)", worker.poll())
            signal_wait.cancel()
            return 1
        print(
            f"mesh is up: gRPC {router.address}, HTTP http://127.0.0.1:{args.http_port} "
            f"(try: curl -s http://127.0.0.1:{args.http_port}/health). Ctrl-C stops it.",
            flush=True,
        )
        await signal_wait
        return 0
    finally:
        log.info("stopping the mesh")
        if worker is not None:
            await asyncio.to_thread(_stop_process, worker, 15.0)
        await router.drain(grace_s=2.0)
        if http_runner is not None:
            await http_runner.cleanup()
        await router.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mesh", description="inference-mesh: a routing mesh for model workers"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    router = commands.add_parser("router", help="run a router replica")
    add_router_arguments(router)
    add_logging_arguments(router)

    worker = commands.add_parser("worker", help="run a worker agent next to a model")
    from worker_agent.cli import add_worker_arguments

    add_worker_arguments(worker)
    add_logging_arguments(worker)

    facade = commands.add_parser("facade", help="run the HTTP facade as its own process")
    from http_facade.cli import add_facade_arguments

    add_facade_arguments(facade)
    add_logging_arguments(facade)

    up = commands.add_parser("up", help="run a local mesh: router, HTTP facade and one real-model worker")
    add_up_arguments(up)
    add_logging_arguments(up)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.json_logs)
    if args.command == "worker":
        from worker_agent.cli import run_worker

        runner = run_worker
    else:
        if args.command == "router":
            runner = run_router
        elif args.command == "facade":
            from http_facade.cli import run_facade

            runner = run_facade
        else:
            runner = run_up
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(runner(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
