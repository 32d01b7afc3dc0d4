"""Faults on a replicated mesh, as real processes: etcd down, a worker paused."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from http_facade.grpc_client import GrpcMeshClient
from mesh.errors import ErrorCode, MeshError
from mesh.ha import fence_key, read_routers, read_workers, router_key
from mesh.v1 import common_pb2, inference_pb2
from tests.ha.conftest import MODEL, SILENCE_TIMEOUT_S, first_reply_to_hello, health, healthy_workers

pytestmark = [pytest.mark.etcd, pytest.mark.system, pytest.mark.timeout(120)]

OUTAGE_S = 10.0


def encode(text: str) -> inference_pb2.EncodeRequest:
    return inference_pb2.EncodeRequest(model=MODEL, items=[common_pb2.Item(id="x", text=text)])


class Load:
    """Requests sent without pause through a client that knows every replica; records every outcome."""

    def __init__(self, client: GrpcMeshClient, concurrency: int = 4) -> None:
        self._client = client
        self._concurrency = concurrency
        self.answered_by: list[str] = []
        self.failures: list[BaseException] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send(lane)) for lane in range(self._concurrency)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _send(self, lane: int) -> None:
        index = 0
        while not self._stop.is_set():
            index += 1
            try:
                reply = await self._client.encode(
                    encode(f"{lane}-{index}"), timeout_s=10.0, request_id=f"{lane}-{index}"
                )
                self.answered_by.append(reply.worker_id)
            except Exception as error:  # noqa: BLE001 - collected, asserted empty
                self.failures.append(error)

    async def progressed(self, since: int) -> bool:
        """Whether more requests were answered than `since` (for polling)."""
        return len(self.answered_by) > since


async def test_ten_seconds_without_etcd_cost_no_request(mesh, store, etcd, assert_eventually):
    r1, r2 = mesh.router("r1"), mesh.router("r2")
    mesh.worker("w0", latency_ms=5)
    mesh.worker("w1", latency_ms=5)
    expected = {"w0", "w1"}

    async def settled():
        for router in (r1, r2):
            assert set(await healthy_workers(router.address)) == expected, mesh.logs()
        assert set(await read_routers(store)) == {"r1", "r2"}

    await assert_eventually(settled, timeout_s=30, interval_s=0.1)
    leases_before = {rid: (await store.get(router_key(rid))).lease_id for rid in ("r1", "r2")}

    async with GrpcMeshClient([r1.address, r2.address], health_interval_s=0.5) as client:
        load = Load(client)
        load.start()
        etcd.kill()
        outage_ends_s = time.monotonic() + OUTAGE_S

        # Every replica says so, and shared-state writes are refused with a retry hint.
        async def store_disconnected():
            for router in (r1, r2):
                assert not (await health(router.address)).store_connected

        await assert_eventually(store_disconnected, timeout_s=OUTAGE_S - 2, interval_s=0.1)
        with pytest.raises(MeshError) as refused:
            await store.put("outage-probe", b"during")
        assert refused.value.code is ErrorCode.STORE_UNAVAILABLE
        assert refused.value.retry_after_s and refused.value.retry_after_s > 0

        # The outage lasts its full length while requests keep being answered.
        while time.monotonic() < outage_ends_s:
            answered = len(load.answered_by)
            await assert_eventually(lambda answered=answered: load.progressed(answered), timeout_s=2)
            assert not load.failures, load.failures[:3]
            await asyncio.sleep(0.2)  # pacing of the progress check, not a wait for an outcome
        answered_during = len(load.answered_by)
        await etcd.restart()

        # Writes succeed again, on the same client, which reconnected by itself.
        async def write_succeeds():
            try:
                await store.put("outage-probe", b"after")
            except MeshError as error:
                raise AssertionError(f"still refused: {error}") from error

        await assert_eventually(write_succeeds, timeout_s=15, interval_s=0.1)

        # Both replicas reconnect, and re-register under new leases (theirs ran out meanwhile).
        async def recovered():
            for router in (r1, r2):
                assert (await health(router.address)).store_connected
            routers = await read_routers(store)
            assert set(routers) == {"r1", "r2"}
            for rid in ("r1", "r2"):
                kv = await store.get(router_key(rid))
                assert kv is not None and kv.lease_id != leases_before[rid]
            workers = await read_workers(store)
            assert {w: {r.router_id for r in records} for w, records in workers.items()} == {
                w: {"r1", "r2"} for w in expected
            }

        await assert_eventually(recovered, timeout_s=15, interval_s=0.1)

        # The workers' own etcd watch resumed too: they find a replica that starts now.
        r3 = mesh.router("r3")

        async def newcomer_found():
            assert set(await healthy_workers(r3.address)) == expected, mesh.logs()

        await assert_eventually(newcomer_found, timeout_s=20, interval_s=0.1)
        await load.stop()

    assert not load.failures, load.failures[:3]
    assert answered_during > 50, answered_during


async def test_a_paused_worker_is_fenced_and_returns_only_as_a_new_incarnation(
    mesh, store, assert_eventually
):
    r1, r2 = mesh.router("r1"), mesh.router("r2")
    paused = mesh.worker("w-paused")
    mesh.worker("w-steady")

    async def both_listed():
        views = [await healthy_workers(router.address) for router in (r1, r2)]
        for view in views:
            assert set(view) == {"w-paused", "w-steady"}, mesh.logs()
        assert views[0] == views[1]
        return views[0]["w-paused"]

    old_uid = await assert_eventually(both_listed, timeout_s=30, interval_s=0.1)

    paused.signal(signal.SIGSTOP)
    try:

        async def out_of_routing_everywhere():
            for router in (r1, r2):
                assert "w-paused" not in await healthy_workers(router.address)
            assert await store.get(fence_key("w-paused", old_uid)) is not None

        await assert_eventually(out_of_routing_everywhere, timeout_s=SILENCE_TIMEOUT_S + 8, interval_s=0.1)

        # Every replica refuses the stale incarnation: a Fence instead of a Welcome.
        for router in (r1, r2):
            reply = await first_reply_to_hello(router.address, "w-paused", old_uid)
            assert reply.WhichOneof("kind") == "fence", reply

        # Meanwhile requests are served, by the worker that is still there.
        async with GrpcMeshClient([r1.address, r2.address]) as client:
            served = [
                (await client.encode(encode(f"t{i}"), timeout_s=10.0, request_id=f"p{i}")).worker_id
                for i in range(10)
            ]
        assert set(served) == {"w-steady"}
    finally:
        paused.signal(signal.SIGCONT)

    # Back only through a fresh Hello: a new instance uid, the same on both replicas, and in etcd.
    async def back_as_new_incarnation():
        views = [await healthy_workers(router.address) for router in (r1, r2)]
        for view in views:
            assert "w-paused" in view and view["w-paused"] != old_uid, views
        assert views[0]["w-paused"] == views[1]["w-paused"], views
        records = (await read_workers(store))["w-paused"]
        assert {r.instance_uid for r in records} == {views[0]["w-paused"]}
        assert {r.router_id for r in records} == {"r1", "r2"}

    await assert_eventually(back_as_new_incarnation, timeout_s=20, interval_s=0.1)


async def test_workers_find_replicas_through_a_dns_name(mesh, assert_eventually):
    router = mesh.router("r1")
    port = router.address.rpartition(":")[2]
    mesh.worker("w-dns", routers=f"dns:///localhost:{port}")

    async def registered():
        assert set(await healthy_workers(router.address)) == {"w-dns"}, mesh.logs()

    await assert_eventually(registered, timeout_s=30, interval_s=0.1)
