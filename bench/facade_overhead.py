"""HTTP facade overhead benchmark: the facade against a bare aiohttp server, same run.

    .venv/bin/python bench/facade_overhead.py [--duration-s 5] [--concurrency 1,16,64] [--workers 1] [--rounds 3]

The load is what sie-sdk sends for `client.encode(model, {"text": ...})`: one
item of a sentence, a MessagePack body, `Content-Type` and `Accept:
application/msgpack`, `X-SIE-SDK-Version`. It is driven, closed-loop (one
request per client coroutine at a time), from this process (one aiohttp
session, keep-alive) at:

(a) a bare aiohttp server answering POST /v1/encode/... with a prebuilt reply of
    the same size: the msgpack-numpy encode reply of one 384-d float32 vector;
(b) the facade inside the router process (`mesh router --http-port`) with
    zero-latency fake worker agents (`mesh worker --backend fake --preload`);
(c) the facade as its own process (`mesh facade --router`) in front of the same
    router (facade -> gRPC -> router -> worker).

All three targets are started first and stay up; each round then drives, at
each concurrency, (a), (b) and (c) one after the other, so every ratio pairs
measurements taken seconds apart. (A small shared machine drifts by several
per cent from one minute to the next; pairing adjacent runs keeps that drift
out of the ratios, and the median over rounds keeps one unlucky run out.)

The table shows, per target and concurrency, the round with the median RPS:
its RPS, p50, p99, the CPU microseconds per request of each server process
(utime + stime from /proc/PID/stat: the HTTP server, and for (c) also the
router behind it); and the median over rounds of the RPS ratio to (a) at the
same concurrency in the same round. Every round's ratio is listed below it.
Everything runs on 127.0.0.1; only the processes started here are stopped, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgpack
import numpy as np
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_processes import LoadResult, bench_arguments, cpu_seconds, positive, start, stop, wait_listening

from http_facade.codecs import Codec, encode_reply
from http_facade.replies import encode_reply as encode_reply_view
from mesh.v1 import common_pb2, inference_pb2

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DIMS = 384
SENTENCE = "The mesh routes this sentence to a worker."
SDK_VERSION = "0.10.1"
MSGPACK = "application/msgpack"


def request_body() -> bytes:
    """Byte for byte what sie-sdk 0.10.1 posts for one item without an id."""
    return msgpack.packb({"items": [{"text": SENTENCE}]}, use_bin_type=True)


def request_headers() -> dict[str, str]:
    return {"Content-Type": MSGPACK, "Accept": MSGPACK, "X-SIE-SDK-Version": SDK_VERSION}


def bare_reply() -> bytes:
    """The facade's own rendering of a fake worker's answer, so (a) sends what (b) and (c) send."""
    vector = np.random.default_rng(0).standard_normal(DIMS).astype("<f4")
    vector /= np.linalg.norm(vector)
    dense = common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=[DIMS], data=vector.tobytes())
    response = inference_pb2.EncodeResponse(model=MODEL, worker_id="bare-worker", request_id="0" * 32)
    response.items.add(dense=dense)
    response.timing.total_ms = 1.0
    return encode_reply(encode_reply_view(response, MODEL, 1, True), Codec.MSGPACK)


# -- (a) the bare server ------------------------------------------------------


async def serve_bare() -> None:
    body = bare_reply()

    async def encode(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, headers={"Content-Type": MSGPACK})

    app = web.Application()
    app.router.add_post("/v1/encode/{model:.+}", encode)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


# -- processes ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- load -----------------------------------------------------------------------


@dataclass
class Result(LoadResult):
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds over the measured window by role: "http" (the process serving HTTP),
    "router" (behind a separate facade process), "workers" (all fake workers together)."""
    reply_bytes: int = 0

    @property
    def cpu_s_total(self) -> float:
        return sum(self.cpu_s.values())

    def cpu_us_per_request(self, role: str) -> float | None:
        if role not in self.cpu_s:
            return None
        return self.cpu_s[role] * 1e6 / max(1, self.requests)


async def drive(
    base_url: str,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    pids: dict[str, list[int]],
    label: str,
) -> Result:
    url = f"{base_url}/v1/encode/{MODEL}"
    body = request_body()
    headers = request_headers()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        latencies: list[float] = []
        errors = 0
        reply_bytes = 0
        measuring = False
        stop_at = 0.0

        async def client() -> None:
            nonlocal errors, reply_bytes
            while True:
                began = time.perf_counter()
                if stop_at and began >= stop_at:
                    return
                try:
                    async with session.post(url, data=body, headers=headers) as reply:
                        payload = await reply.read()
                        ok = reply.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if not ok:
                    errors += 1
                    continue
                reply_bytes = len(payload)
                if measuring:
                    latencies.append((time.perf_counter() - began) * 1000.0)

        loop = asyncio.get_running_loop()
        stop_at = time.perf_counter() + warmup_s + duration_s
        clients = [loop.create_task(client()) for _ in range(concurrency)]
        await asyncio.sleep(warmup_s)
        cpu_before = {role: sum(map(cpu_seconds, role_pids)) for role, role_pids in pids.items()}
        began = time.perf_counter()
        measuring = True
        await asyncio.gather(*clients)
        elapsed = time.perf_counter() - began
        cpu = {role: sum(map(cpu_seconds, role_pids)) - cpu_before[role] for role, role_pids in pids.items()}
        return Result(label, concurrency, len(latencies), errors, elapsed, latencies, cpu, reply_bytes)


async def wait_served(base_url: str, timeout_s: float = 60) -> None:
    """Until one SDK-shaped encode succeeds (workers registered, model loaded)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.post(
                    f"{base_url}/v1/encode/{MODEL}", data=request_body(), headers=request_headers()
                ) as reply:
                    await reply.read()
                    if reply.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"{base_url} never served an encode request")


def print_table(rounds: list[list[Result]]) -> None:
    """`rounds`: per round, its results in drive order (levels, then targets within a level)."""
    labels = list(dict.fromkeys(r.label for r in rounds[0]))
    levels = list(dict.fromkeys(r.concurrency for r in rounds[0]))

    def of(results: list[Result], label: str, level: int) -> Result:
        return next(r for r in results if r.label == label and r.concurrency == level)

    def ratios(label: str, level: int) -> list[float]:
        return [
            of(results, label, level).rps / of(results, labels[0], level).rps
            if of(results, labels[0], level).rps
            else float("nan")
            for results in rounds
        ]

    def cpu(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    print()
    print(
        f"{'target':<30}{'conc':>5}{'RPS':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'cpu us/req':>11}{'router us':>10}{'workers us':>11}{'all us':>8}{'x/a RPS':>9}{'reply B':>9}"
    )
    for label in labels:
        for level in levels:
            runs = sorted((of(results, label, level) for results in rounds), key=lambda r: r.rps)
            r = runs[len(runs) // 2]
            errors = sum(run.errors for run in runs)
            print(
                f"{r.label:<30}{r.concurrency:>5}{r.rps:>8.0f}{r.percentile(0.5):>8.2f}{r.percentile(0.99):>8.2f}"
                f"{cpu(r.cpu_us_per_request('http')):>11}{cpu(r.cpu_us_per_request('router')):>10}"
                f"{cpu(r.cpu_us_per_request('workers')):>11}{cpu(r.cpu_s_total * 1e6 / max(1, r.requests)):>8}"
                f"{statistics.median(ratios(label, level)):>9.2f}{r.reply_bytes:>9}"
                + (f"  ({errors} errors)" if errors else "")
            )
    print()
    print(f"x/a RPS by round ({len(rounds)} rounds; the table shows their median):")
    for label in labels[1:]:
        for level in levels:
            listed = " ".join(f"{ratio:.3f}" for ratio in ratios(label, level))
            print(f"  {label:<28}{level:>5}  {listed}")
    print()
    print("cpu us/req: the process serving HTTP (a: bare server; b: the router, facade in-process;")
    print("c: the facade process). router us: the router behind the facade process in (c).")
    print("workers us: the fake worker agents; all us: every server process of the target.")
    print(f"load generator: this process, one aiohttp session; {os.cpu_count()} CPUs shared by all.")


def _rounds_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rounds",
        type=positive(int),
        default=3,
        help="times each (concurrency, target) is measured, alternating targets",
    )


def main() -> int:
    args = bench_arguments(__doc__.splitlines()[0], _rounds_argument)
    if args.serve_bare:
        asyncio.run(serve_bare())
        return 0
    levels: list[int] = args.concurrency
    rounds: list[list[Result]] = []

    with tempfile.TemporaryDirectory() as scratch:
        logs = Path(scratch)
        started: list[subprocess.Popen] = []
        try:
            bare = start([__file__, "--serve-bare"], logs, "bare")
            started.append(bare)
            bare_url = f"http://{wait_listening(logs / 'bare.log', bare)}"

            http_port = free_port()
            router = start(
                ["-m", "mesh.cli", "router", "--port", "0", "--http-port", str(http_port), "-l", "warning"],
                logs,
                "router",
            )
            started.append(router)
            address = wait_listening(logs / "router.log", router)
            workers = []
            for index in range(args.workers):
                worker_args = ["-m", "mesh.cli", "worker", "--router", address, "--backend", "fake"]
                worker_args += ["--preload", "--worker-id", f"bench-{index}", "-l", "warning"]
                worker = start(worker_args, logs, f"worker-{index}")
                started.append(worker)
                workers.append(worker.pid)
            in_router = f"http://127.0.0.1:{http_port}"
            asyncio.run(wait_served(in_router))

            facade_port = free_port()
            facade = start(
                ["-m", "mesh.cli", "facade", "--host", "127.0.0.1", "--port", str(facade_port)]
                + ["--router", address, "-l", "warning"],
                logs,
                "facade",
            )
            started.append(facade)
            own_process = f"http://127.0.0.1:{facade_port}"
            asyncio.run(wait_served(own_process))

            targets = [
                ("a bare aiohttp", bare_url, {"http": [bare.pid]}),
                ("b facade in router", in_router, {"http": [router.pid], "workers": workers}),
                (
                    "c facade process + router",
                    own_process,
                    {"http": [facade.pid], "router": [router.pid], "workers": workers},
                ),
            ]
            for _ in range(args.rounds):
                results: list[Result] = []
                for level in levels:
                    for label, url, pids in targets:
                        results.append(
                            asyncio.run(drive(url, level, args.duration_s, args.warmup_s, pids, label))
                        )
                rounds.append(results)
        finally:
            for process in reversed(started):
                stop(process)
    print_table(rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
