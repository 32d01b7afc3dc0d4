"""The pieces `mesh/cli.py` wires in.

mesh facade --port 8080 --router HOST:PORT[,HOST:PORT...]   (own process, gRPC to routers)
mesh facade --port 8080 --router dns:///NAME:PORT            (every address NAME resolves to)
mesh facade --port 8080 --etcd http://HOST:2379              (the routers registered in etcd)
mesh router --http-port 8080                                 (in-process: start_http_server)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal

from aiohttp import web

from http_facade.app import STATE_KEY, create_app
from http_facade.config import FacadeConfig
from http_facade.grpc_client import GrpcMeshClient
from mesh.cli import port_number, positive_seconds
from mesh.config_api import GrpcConfigClient
from mesh.ha import DiscoveryConfig, RouterDiscovery, parse_router_specs, split_router_specs
from mesh.ha.flags import ETCD_URL_ENV, add_etcd_arguments
from mesh.pools import GrpcPoolsClient

log = logging.getLogger(__name__)

_DEFAULTS = FacadeConfig()


def _router_specs(text: str) -> list[str]:
    try:
        return list(parse_router_specs(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite, non-negative number of seconds")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def add_facade_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `mesh facade`. Tokens come from SIE_AUTH_TOKEN / SIE_ADMIN_TOKEN, never flags
    (a flag shows in `ps`)."""
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "-p", "--port", type=port_number, default=8080, help="HTTP port (default: %(default)s)"
    )
    router = parser.add_argument(
        "--router",
        type=_router_specs,
        default=[],
        metavar="HOST:PORT|dns:///NAME:PORT[,...]",
        help="router replicas' gRPC addresses; the facade keeps a channel to each. dns:///NAME:PORT "
        "stands for every address NAME resolves to, re-resolved every --dns-refresh-s (a Kubernetes "
        "headless service). Needed unless --etcd is given",
    )
    parser.add_argument(
        "--dns-refresh-s",
        type=positive_seconds,
        default=DiscoveryConfig.dns_refresh_s,
        help="how often dns:/// router names are resolved again (default: %(default)s)",
    )
    add_etcd_arguments(
        parser,
        what="to discover the router replicas from (they register there); with or instead of --router",
        satisfies=router,
    )
    # argparse has no "A or B is required": --router is required unless etcd is
    # configured, by the environment (known now) or by --etcd (see satisfies).
    router.required = not os.environ.get(ETCD_URL_ENV, "").strip()
    parser.add_argument(
        "--request-timeout-s",
        type=positive_seconds,
        default=_DEFAULTS.request_timeout_s,
        help="budget of one inference request (default: %(default)s)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=_DEFAULTS.max_body_bytes,
        help="largest request body (default: %(default)s)",
    )
    parser.add_argument(
        "--max-items",
        type=_positive_int,
        default=_DEFAULTS.max_items,
        help="most items per encode or extract request (default: %(default)s)",
    )
    parser.add_argument(
        "--drain-s",
        type=_non_negative_float,
        default=0.0,
        help="on SIGTERM, answer /readyz 503 this long before closing, so balancers move away first "
        "(default: %(default)s)",
    )


def facade_config(args: argparse.Namespace) -> FacadeConfig:
    """FacadeConfig from parsed `add_facade_arguments` flags and the token variables."""
    return FacadeConfig.from_env(
        request_timeout_s=args.request_timeout_s,
        max_body_bytes=args.max_body_bytes,
        max_items=args.max_items,
    )


def router_discovery_config(args: argparse.Namespace) -> DiscoveryConfig:
    """Where the facade finds the routers, from parsed `add_facade_arguments` flags."""
    static, names = split_router_specs(args.router)
    return DiscoveryConfig(
        static=static,
        dns=names,
        etcd_url=args.etcd,
        etcd_prefix=args.etcd_prefix,
        dns_refresh_s=args.dns_refresh_s,
    )


async def start_http_server(
    app: web.Application, host: str, port: int, *, shutdown_timeout_s: float = 10.0
) -> web.AppRunner:
    """Serve `app` on host:port; returns the runner (`await runner.cleanup()` stops it).

    handler_cancellation is what makes a client's disconnect cancel its mesh
    call. Port 0 picks a free port: read it from `runner.addresses`.
    """
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_timeout_s
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def _wait_for_stop_signal() -> None:
    """Returns on SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def run_facade(args: argparse.Namespace) -> int:
    """`mesh facade`: serve the HTTP API over gRPC to the routers until SIGINT/SIGTERM."""
    config = facade_config(args)
    # One discovery for the three clients: they follow the same replicas.
    discovery = RouterDiscovery(router_discovery_config(args))
    async with (
        discovery,
        GrpcMeshClient(discovery) as mesh,
        GrpcConfigClient(discovery) as config_api,
        GrpcPoolsClient(discovery) as pools_api,
    ):
        app = create_app(mesh, config, config_api=config_api, pools_api=pools_api)
        try:
            runner = await start_http_server(app, args.host, args.port)
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
            return 1
        sources = [*args.router, *(f"etcd {url}" for url in [args.etcd] if url)]
        log.info(
            "facade listening on %s, routers from %s, auth %s",
            ", ".join(str(address) for address in runner.addresses),
            ", ".join(sources),
            "on" if config.auth_enabled else "off",
        )
        try:
            await _wait_for_stop_signal()
            app[STATE_KEY].draining = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(args.drain_s)
        finally:
            await runner.cleanup()
    return 0
