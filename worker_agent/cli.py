"""`mesh worker` / `python -m worker_agent`: run one worker agent until a signal.

`add_worker_arguments` declares the flags on any parser (the `mesh` CLI adds
them to its `worker` subcommand); `run_worker` runs the agent: SIGTERM or
SIGINT drains (up to `--drain-grace-s`) and then stops; a second signal stops
at once. Flags are checked while parsing, so a bad one is an argparse error
(exit 2) with a clear message and no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from mesh.catalog import load_catalog
from mesh.errors import MeshError
from mesh.ha import split_router_specs
from worker_agent.agent import WorkerAgent
from worker_agent.backends import backend_names, create_backend
from worker_agent.backends.base import Backend
from worker_agent.config import AgentConfig, default_worker_id

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


# -- flag types: each raises ArgumentTypeError, which argparse reports as exit 2 ----------


def router_addresses(text: str) -> tuple[str, ...]:
    """`HOST:PORT[,HOST:PORT...]`; IPv6 hosts in brackets (`[::1]:7070`); `dns:///NAME:PORT` for
    every address of a name."""
    addresses = []
    for part in text.split(","):
        address = part.strip()
        try:
            split_router_specs([address])
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        addresses.append(address)
    if len(set(addresses)) != len(addresses):
        raise argparse.ArgumentTypeError("a router is listed twice")
    return tuple(addresses)


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
        return value

    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def _port(text: str) -> int:
    value = _int_at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number")
    return value


def _directory(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory")
    return path


def _torch_device(text: str) -> str:
    value = text.strip().lower()
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise argparse.ArgumentTypeError(f"'{text}' is not a device: use auto, cpu, cuda or cuda:N")


def _model_path(text: str) -> tuple[str, Path]:
    model_id, separator, directory = text.partition("=")
    if not separator or not model_id.strip() or not directory:
        raise argparse.ArgumentTypeError(f"{text!r} is not MODEL_ID=DIR")
    return model_id.strip(), _directory(directory)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the worker flags on `parser`."""
    router = parser.add_argument(
        "--router",
        type=router_addresses,
        default=(),
        metavar="HOST:PORT[,HOST:PORT...]",
        help="router replicas to register with; the agent keeps one stream to each. "
        "dns:///NAME:PORT stands for every address NAME resolves to, re-resolved every "
        "--dns-refresh-s (a Kubernetes headless service). Needed unless --etcd is given",
    )
    parser.add_argument(
        "--dns-refresh-s",
        type=_positive_float,
        default=5.0,
        help="how often dns:/// router names are resolved again (default: 5)",
    )
    from mesh.ha.flags import ETCD_URL_ENV, add_etcd_arguments

    add_etcd_arguments(
        parser,
        what="to discover the router replicas from (they register there); with or instead of --router",
        satisfies=router,
    )
    # argparse has no "A or B is required": --router is required unless etcd
    # is configured, by the environment (known now) or by --etcd (see satisfies).
    router.required = not os.environ.get(ETCD_URL_ENV, "").strip()
    parser.add_argument(
        "--bundle", default="default", help="bundle whose models this worker serves (default: default)"
    )
    parser.add_argument("--machine-profile", default="cpu", help="machine profile / GPU type (default: cpu)")
    parser.add_argument(
        "--pool", default="", help="pool this worker is reserved for (default: the shared fleet)"
    )
    parser.add_argument(
        "--backend",
        default="sentence-transformers",
        choices=backend_names(),
        help="what runs the models (default: sentence-transformers)",
    )
    parser.add_argument("--worker-id", default=None, help="stable worker name (default: HOSTNAME-PID)")
    parser.add_argument(
        "--gpu-count", type=_int_at_least(0), default=1, help="accelerators on this node (default: 1)"
    )
    parser.add_argument(
        "--preload", action="store_true", help="load the bundle's models at start; ready only then"
    )
    parser.add_argument("--bundles-dir", type=_directory, default=None, help="directory of bundle YAML files")
    parser.add_argument("--models-dir", type=_directory, default=None, help="directory of model YAML files")
    parser.add_argument(
        "--model-path",
        type=_model_path,
        action="append",
        default=[],
        metavar="MODEL_ID=DIR",
        help="local weights of a model (repeatable); nothing is ever downloaded",
    )
    parser.add_argument(
        "--device",
        default="auto",
        type=_torch_device,
        help="torch device of the sentence-transformers backend: auto (CUDA when present), cpu, cuda, cuda:N",
    )
    parser.add_argument("--health-port", type=_port, default=None, help="serve grpc.health.v1 on this port")
    parser.add_argument(
        "--health-host", default="0.0.0.0", help="address of the health endpoint (default: 0.0.0.0)"
    )
    parser.add_argument(
        "--drain-grace-s",
        type=_non_negative_float,
        default=30.0,
        help="on SIGTERM, time to finish queued work before stopping (default: 30)",
    )

    batching = parser.add_argument_group("batching and queueing")
    batching.add_argument(
        "--max-batch-requests", type=_int_at_least(1), default=32, help="requests per batch (32)"
    )
    batching.add_argument(
        "--max-batch-tokens",
        type=_int_at_least(0),
        default=0,
        help="estimated tokens per batch; 0 takes each model profile's max_batch_tokens (default: 0)",
    )
    batching.add_argument(
        "--max-batch-wait-ms",
        type=_non_negative_float,
        default=0.0,
        help="longest wait for a batch to fill on an idle backend (0: run at once; "
        "requests that arrive while a batch runs form the next one)",
    )
    batching.add_argument(
        "--queue-capacity", type=_int_at_least(1), default=256, help="queued tasks at most (256)"
    )
    batching.add_argument(
        "--max-concurrent-batches", type=_int_at_least(1), default=1, help="batches running at once (1)"
    )

    fake = parser.add_argument_group("fake backend (--backend fake)")
    fake.add_argument("--fake-dims", type=_int_at_least(1), default=384, help="dense dimensions (384)")
    fake.add_argument("--fake-fixed-latency-ms", type=_non_negative_float, default=0.0, help="per batch (0)")
    fake.add_argument(
        "--fake-per-item-latency-ms", type=_non_negative_float, default=0.0, help="per item (0)"
    )
    fake.add_argument(
        "--fake-load-delay-ms", type=_non_negative_float, default=0.0, help="per model load (0)"
    )
    fake.add_argument(
        "--fake-fail-load",
        action="append",
        default=[],
        metavar="MODEL_ID",
        help="model whose load fails (repeatable)",
    )
    fake.add_argument(
        "--fake-fail-every-nth-batch", type=_int_at_least(0), default=0, help="fail every Nth batch; 0 never"
    )
    fake.add_argument(
        "--fake-oom-above-items",
        type=_int_at_least(0),
        default=0,
        help="out of memory above N items; 0 never",
    )
    fake.add_argument("--fake-stall", action="store_true", help="never answer a batch")


def agent_config_from_args(args: argparse.Namespace) -> AgentConfig:
    return AgentConfig(
        routers=tuple(args.router),
        worker_id=args.worker_id or default_worker_id(),
        bundle=args.bundle,
        machine_profile=args.machine_profile,
        pool=args.pool,
        gpu_count=args.gpu_count,
        max_batch_requests=args.max_batch_requests,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_wait_s=args.max_batch_wait_ms / 1000.0,
        queue_capacity=args.queue_capacity,
        max_concurrent_batches=args.max_concurrent_batches,
        preload=args.preload,
        health_port=args.health_port,
        health_host=args.health_host,
        etcd_url=args.etcd,
        etcd_prefix=args.etcd_prefix,
        dns_refresh_s=args.dns_refresh_s,
    )


def backend_from_args(args: argparse.Namespace) -> Backend:
    config: Any = None
    if args.backend == "fake":
        from worker_agent.backends.fake import FakeBackendConfig

        config = FakeBackendConfig(
            dims=args.fake_dims,
            fixed_latency_s=args.fake_fixed_latency_ms / 1000.0,
            per_item_latency_s=args.fake_per_item_latency_ms / 1000.0,
            load_delay_s=args.fake_load_delay_ms / 1000.0,
            fail_load=frozenset(args.fake_fail_load),
            fail_every_nth_batch=args.fake_fail_every_nth_batch,
            oom_above_items=args.fake_oom_above_items,
            stall=args.fake_stall,
        )
    elif args.backend == "sentence-transformers":
        from worker_agent.backends.sentence_transformer import SentenceTransformerConfig

        config = SentenceTransformerConfig(model_paths=dict(args.model_path), device=args.device)
    return create_backend(args.backend, config)


async def run_worker(args: argparse.Namespace) -> int:
    """Run one agent until SIGTERM/SIGINT (drain, then stop). Returns the exit status."""
    try:
        catalog = load_catalog(args.bundles_dir, args.models_dir)
        config = agent_config_from_args(args)
        backend = backend_from_args(args)
    except (MeshError, ValueError) as error:
        print(f"worker: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    agent = WorkerAgent(config, backend, catalog)
    loop = asyncio.get_running_loop()
    signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signals.put_nowait, signum)
    try:
        try:
            await agent.start()
        except MeshError as error:
            print(f"worker: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as error:
            print(f"worker: error: {error}", file=sys.stderr)
            return EXIT_FAILED
        received = await signals.get()
        log.info("%s: draining for up to %.1f s, then stopping", received.name, args.drain_grace_s)
        draining = asyncio.create_task(agent.drain(args.drain_grace_s, reason=f"{received.name} received"))
        second_signal = asyncio.create_task(signals.get())
        await asyncio.wait({draining, second_signal}, return_when=asyncio.FIRST_COMPLETED)
        for task in (draining, second_signal):
            task.cancel()
        await asyncio.gather(draining, second_signal, return_exceptions=True)
        return EXIT_OK
    finally:
        await agent.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
