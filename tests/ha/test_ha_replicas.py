"""Router replicas on etcd, as real processes: discovery, failover, leadership, drain."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest

from http_facade.grpc_client import GrpcMeshClient
from mesh.ha import LEADER_KEY, read_routers, read_workers
from mesh.v1 import common_pb2, inference_pb2
from tests.ha.conftest import LEASE_TTL_S, MODEL, healthy_workers

pytestmark = [pytest.mark.etcd, pytest.mark.system, pytest.mark.timeout(90)]


def encode(text: str) -> inference_pb2.EncodeRequest:
    return inference_pb2.EncodeRequest(model=MODEL, items=[common_pb2.Item(id="x", text=text)])


async def test_every_replica_sees_every_worker_soon_after_its_hello(mesh, store, assert_eventually):
    r1, r2 = mesh.router("r1"), mesh.router("r2")
    await assert_eventually(lambda: _routers_registered(store, {"r1", "r2"}), timeout_s=10, interval_s=0.05)
    expected = {"w0", "w1", "w2"}
    for worker_id in sorted(expected):
        mesh.worker(worker_id)

    # When each replica first listed each worker. A worker says Hello to both
    # replicas at once, so the first replica to list it marks its Hello.
    first_seen: dict[tuple[str, str], float] = {}

    async def both_list_every_worker():
        for router in (r1, r2):
            for worker_id in await healthy_workers(router.address):
                first_seen.setdefault((router.name, worker_id), time.monotonic())
        assert {w for _, w in first_seen} == expected and len(first_seen) == 6, mesh.logs()

    await assert_eventually(both_list_every_worker, timeout_s=30, interval_s=0.02)
    for worker_id in expected:
        seen = [first_seen[(router.name, worker_id)] for router in (r1, r2)]
        assert max(seen) - min(seen) < 1.0, (worker_id, seen)

    # Each replica publishes its own key per worker, with the incarnation.
    workers = await read_workers(store)
    assert set(workers) == expected
    for records in workers.values():
        assert {record.router_id for record in records} == {"r1", "r2"}
        assert len({record.instance_uid for record in records}) == 1, records

    # A replica that starts later is found by every running worker within a second.
    r3 = mesh.router("r3")
    joined_s = time.monotonic()

    async def newcomer_lists_every_worker():
        assert set(await healthy_workers(r3.address)) == expected, mesh.logs()

    await assert_eventually(newcomer_lists_every_worker, timeout_s=10, interval_s=0.02)
    assert time.monotonic() - joined_s < 1.0


async def test_a_killed_replica_loses_no_request(mesh, store, assert_eventually, caplog):
    caplog.set_level(logging.WARNING, logger="mesh.replica_channels")
    r1, r2 = mesh.router("r1"), mesh.router("r2")
    for index in range(3):
        mesh.worker(f"w{index}", latency_ms=40)
    expected = {"w0", "w1", "w2"}

    async def both_ready():
        for router in (r1, r2):
            assert set(await healthy_workers(router.address)) == expected, mesh.logs()

    await assert_eventually(both_ready, timeout_s=30, interval_s=0.1)

    answered: list[str] = []
    failures: list[BaseException] = []
    async with GrpcMeshClient([r1.address, r2.address], health_interval_s=0.2) as client:
        killed = asyncio.Event()  # set once r1 is gone, with requests in flight on it

        async def send(index: int) -> None:
            try:
                reply = await client.encode(
                    encode(f"text {index}"), timeout_s=15.0, request_id=f"req-{index}"
                )
                answered.append(reply.worker_id)
            except Exception as error:  # noqa: BLE001 - every failure is collected and asserted on
                failures.append(error)

        async def load() -> None:
            # 16 requests in flight at all times, before, during and after the kill.
            pending: set[asyncio.Task[None]] = set()
            for index in range(400):
                if len(pending) >= 16:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                pending.add(asyncio.create_task(send(index)))
                if index == 120:
                    os.kill(r1.pid, signal.SIGKILL)
                    killed.set()
            await asyncio.gather(*pending)

        await load()
    assert killed.is_set()
    assert not failures, failures[:3]
    assert len(answered) == 400
    # Requests were in flight on the killed replica, and went to the other one.
    assert any("failed before answering" in record.getMessage() for record in caplog.records)

    # The survivor keeps every worker; the dead replica's keys go with its lease.
    assert set(await healthy_workers(r2.address)) == expected

    async def dead_replica_gone():
        assert set(await read_routers(store)) == {"r2"}
        workers = await read_workers(store)
        assert {w: {r.router_id for r in records} for w, records in workers.items()} == {
            w: {"r2"} for w in expected
        }

    await assert_eventually(dead_replica_gone, timeout_s=LEASE_TTL_S + 5, interval_s=0.1)
    assert set(await healthy_workers(r2.address)) == expected


async def test_another_replica_leads_within_seconds_of_the_leaders_death(mesh, store, assert_eventually):
    routers = {"r1": mesh.router("r1"), "r2": mesh.router("r2")}

    async def someone_leads():
        kv = await store.get(LEADER_KEY)
        assert kv is not None
        return kv.value.decode()

    leader = await assert_eventually(someone_leads, timeout_s=15, interval_s=0.05)
    follower = ({"r1", "r2"} - {leader}).pop()
    os.kill(routers[leader].pid, signal.SIGKILL)
    killed_s = time.monotonic()

    async def follower_leads():
        assert await someone_leads() == follower

    await assert_eventually(follower_leads, timeout_s=LEASE_TTL_S + 7, interval_s=0.05)
    takeover_s = time.monotonic() - killed_s
    # The dead leader's lease runs out (TTL), then the watch wakes the follower.
    assert takeover_s < LEASE_TTL_S + 3, takeover_s


async def test_a_draining_replica_releases_its_registrations_at_once(mesh, store, assert_eventually):
    # A long TTL: the keys must vanish because the lease is revoked, not because it expired.
    r1 = mesh.router("r1", "--lease-ttl-s", "60")
    r2 = mesh.router("r2")
    mesh.worker("w0")

    async def registered():
        workers = await read_workers(store)
        assert {r.router_id for r in workers.get("w0", ())} == {"r1", "r2"}
        assert set(await read_routers(store)) == {"r1", "r2"}

    await assert_eventually(registered, timeout_s=30, interval_s=0.1)
    r1.signal(signal.SIGTERM)
    drained_s = time.monotonic()

    async def released():
        assert set(await read_routers(store)) == {"r2"}
        assert {r.router_id for r in (await read_workers(store)).get("w0", ())} == {"r2"}
        kv = await store.get(LEADER_KEY)
        assert kv is not None and kv.value == b"r2"

    await assert_eventually(released, timeout_s=10, interval_s=0.05)
    assert time.monotonic() - drained_s < 5.0
    assert set(await healthy_workers(r2.address)) == {"w0"}


async def _routers_registered(store, expected: set[str]) -> None:
    assert set(await read_routers(store)) == expected
