"""Router overhead benchmark: the mesh against a bare gRPC server, same run.

    .venv/bin/python bench/router_overhead.py [--duration-s 5] [--concurrency 1,16,64]

(a) a bare `grpc.aio` server answering Encode with a reply of the same size;
(b) `mesh router` with zero-latency fake worker agents (separate processes).
The same closed-loop load (one request per client coroutine at a time) is
driven at each, and the table shows RPS, p50, p99, the server's CPU
microseconds per request, and b/a. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_processes import LoadResult, bench_arguments, cpu_seconds, start, stop, wait_listening

from mesh.v1 import common_pb2, inference_pb2, inference_pb2_grpc

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DIMS = 384


def request() -> inference_pb2.EncodeRequest:
    return inference_pb2.EncodeRequest(
        model=MODEL, items=[common_pb2.Item(id="d1", text="The mesh routes this sentence to a worker.")]
    )


def reply() -> inference_pb2.EncodeResponse:
    dense = common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=[DIMS], data=bytes(4 * DIMS))
    response = inference_pb2.EncodeResponse(model=MODEL, worker_id="bare-worker", request_id="0" * 32)
    response.items.add(id="d1", dense=dense)
    response.timing.total_ms = 1.0
    return response


# -- (a) the bare server ------------------------------------------------------


class BareInference(inference_pb2_grpc.InferenceServicer):
    def __init__(self) -> None:
        self._reply = reply()

    async def Encode(self, req, context):
        return self._reply


async def serve_bare() -> None:
    server = grpc.aio.server()
    inference_pb2_grpc.add_InferenceServicer_to_server(BareInference(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0.5)


# -- load -----------------------------------------------------------------------


@dataclass
class Result(LoadResult):
    cpu_s: float
    """CPU seconds of the target's processes over the measured window."""

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s * 1e6 / max(1, self.requests)


async def drive(
    address: str, concurrency: int, duration_s: float, warmup_s: float, pids: list[int], label: str
):
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        message = request()
        latencies: list[float] = []
        errors = 0
        measuring = False
        stop_at = 0.0

        async def client() -> None:
            nonlocal errors
            while True:
                began = time.perf_counter()
                if stop_at and began >= stop_at:
                    return
                try:
                    await stub.Encode(message, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                if measuring:
                    latencies.append((time.perf_counter() - began) * 1000.0)

        loop = asyncio.get_running_loop()
        stop_at = time.perf_counter() + warmup_s + duration_s
        clients = [loop.create_task(client()) for _ in range(concurrency)]
        await asyncio.sleep(warmup_s)
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        began = time.perf_counter()
        measuring = True
        await asyncio.gather(*clients)
        elapsed = time.perf_counter() - began
        cpu_after = sum(cpu_seconds(pid) for pid in pids)
        return Result(label, concurrency, len(latencies), errors, elapsed, latencies, cpu_after - cpu_before)


def print_table(results: list[Result]) -> None:
    baseline = {r.concurrency: r for r in results if r.label.startswith("a")}
    print()
    print(
        f"{'target':<28}{'conc':>5}{'RPS':>9}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/req':>12}{'b/a RPS':>9}{'+p50 ms':>9}"
    )
    for r in results:
        base = baseline[r.concurrency]
        ratio = r.rps / base.rps if base.rps else float("nan")
        added = r.percentile(0.5) - base.percentile(0.5)
        print(
            f"{r.label:<28}{r.concurrency:>5}{r.rps:>9.0f}{r.percentile(0.5):>9.2f}{r.percentile(0.99):>9.2f}"
            f"{r.cpu_us_per_request:>12.0f}{ratio:>9.2f}{added:>9.2f}"
            + (f"  ({r.errors} errors)" if r.errors else "")
        )
    print()
    print("cpu us/req: (a) the bare server process; (b) the router process alone.")


def main() -> int:
    args = bench_arguments(__doc__.splitlines()[0])
    if args.serve_bare:
        asyncio.run(serve_bare())
        return 0
    levels: list[int] = args.concurrency
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as scratch:
        logs = Path(scratch)
        bare = start([__file__, "--serve-bare"], logs, "bare")
        try:
            address = wait_listening(logs / "bare.log", bare)
            for level in levels:
                results.append(
                    asyncio.run(
                        drive(address, level, args.duration_s, args.warmup_s, [bare.pid], "a bare grpc.aio")
                    )
                )
        finally:
            stop(bare)

        router = start(["-m", "mesh.cli", "router", "--port", "0", "-l", "warning"], logs, "router")
        workers = []
        try:
            address = wait_listening(logs / "router.log", router)
            for index in range(args.workers):
                workers.append(
                    start(
                        [
                            "-m",
                            "mesh.cli",
                            "worker",
                            "--router",
                            address,
                            "--backend",
                            "fake",
                            "--preload",
                            "--worker-id",
                            f"bench-{index}",
                        ],
                        logs,
                        f"worker-{index}",
                    )
                )
            asyncio.run(wait_served(address))
            for level in levels:
                results.append(
                    asyncio.run(
                        drive(
                            address,
                            level,
                            args.duration_s,
                            args.warmup_s,
                            [router.pid],
                            "b router+fake workers",
                        )
                    )
                )
        finally:
            for worker in workers:
                stop(worker)
            stop(router)
    print_table(results)
    return 0


async def wait_served(address: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        while time.monotonic() < deadline:
            try:
                await stub.Encode(request(), timeout=5)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)
    raise SystemExit("the router never served a request")


if __name__ == "__main__":
    sys.exit(main())
