"""HA tests: router replicas and worker agents as real processes on one real etcd.

The etcd fixture is tests/etcd's (imported, not copied): a fresh etcd per
test on free ports, which the test may kill, restart or pause -- only that
process, by PID. Mesh processes run through tests/system's ProcessGroup and
are stopped (by PID) at teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest

from mesh.coordination import EtcdStore
from mesh.v1 import cluster_pb2, cluster_pb2_grpc, registry_pb2, registry_pb2_grpc
from tests.etcd.conftest import EtcdProcess, etcd, fast_etcd_config  # noqa: F401 - the etcd fixture, reused
from tests.system.processes import MeshProcess, ProcessGroup

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PREFIX = "/mesh-ha/"
# Short enough that a crashed replica's lease ends within the tests' patience,
# long enough that two shared CPU cores never miss a keepalive.
LEASE_TTL_S = 3.0
SILENCE_TIMEOUT_S = 1.5


@dataclass
class Mesh:
    """The processes of one test, on one etcd."""

    etcd: EtcdProcess
    group: ProcessGroup

    def router(self, router_id: str, *extra: str) -> MeshProcess:
        return self.group.start_router(
            router_id,
            [
                "--router-id",
                router_id,
                "--etcd",
                self.etcd.client_url,
                "--etcd-prefix",
                PREFIX,
                "--lease-ttl-s",
                str(LEASE_TTL_S),
                "--silence-timeout-s",
                str(SILENCE_TIMEOUT_S),
                *extra,
            ],
        )

    def worker(self, worker_id: str, *, routers: str | None = None, latency_ms: float = 0.0) -> MeshProcess:
        """A fake-backend worker that finds the replicas in etcd (or at `routers`)."""
        where = (
            ["--router", routers] if routers else ["--etcd", self.etcd.client_url, "--etcd-prefix", PREFIX]
        )
        return self.group.start(
            worker_id,
            [
                "worker",
                *where,
                "--backend",
                "fake",
                "--preload",
                "--worker-id",
                worker_id,
                "--fake-dims",
                "8",
                "--fake-fixed-latency-ms",
                str(latency_ms),
                "--drain-grace-s",
                "1",
            ],
        )

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in self.group.processes)


@pytest.fixture
def mesh(etcd: EtcdProcess, tmp_path) -> Iterator[Mesh]:  # noqa: F811 - the imported fixture
    group = ProcessGroup(tmp_path)
    try:
        yield Mesh(etcd, group)
    finally:
        group.stop_all()


@pytest.fixture
async def store(etcd: EtcdProcess) -> AsyncIterator[EtcdStore]:  # noqa: F811
    """The test's own etcd client, on the mesh's prefix (as a third replica would have)."""
    client = EtcdStore(fast_etcd_config(etcd.endpoint, PREFIX))
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def health(address: str, timeout_s: float = 3.0) -> cluster_pb2.ClusterHealth:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await cluster_pb2_grpc.ClusterStub(channel).GetHealth(
            cluster_pb2.GetHealthRequest(), timeout=timeout_s
        )
    return reply.health


async def healthy_workers(address: str) -> dict[str, str]:
    """worker_id -> instance_uid of the healthy workers a replica routes to."""
    return {w.worker_id: w.instance_uid for w in (await health(address)).workers if w.healthy}


async def first_reply_to_hello(address: str, worker_id: str, instance_uid: str) -> registry_pb2.RouterMessage:
    """Say Hello as the given incarnation and return the router's first message."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = registry_pb2_grpc.WorkerRegistryStub(channel).Connect(timeout=5.0)
        hello = registry_pb2.Hello(
            worker_id=worker_id,
            instance_uid=instance_uid,
            backend="fake",
            status=registry_pb2.WorkerStatus(bundle="default", machine_profile="cpu"),
        )
        await call.write(registry_pb2.WorkerMessage(hello=hello))
        reply = await call.read()
        call.cancel()
    assert reply is not grpc.aio.EOF, "the router ended the stream without a word"
    return reply
