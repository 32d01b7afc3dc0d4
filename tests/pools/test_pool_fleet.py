"""The fleet the leader assigns from: its own streams merged with every replica's registrations."""

from __future__ import annotations

import pytest

from mesh.coordination import ManualSleepClock, MemoryStore
from mesh.ha import WorkerRecord, worker_key
from mesh.pools import FleetWorker, LocalFleet, MergedFleet, StoreFleet
from mesh.registry import WorkerRegistry
from mesh.v1 import registry_pb2

pytestmark = pytest.mark.timeout(10)


def register(store, worker_id, router_id, profile="L4", pool=""):
    record = WorkerRecord(worker_id, f"{worker_id}-uid", router_id, "Default", profile, pool)
    return store.put(worker_key(worker_id, router_id), record.encode())


async def test_registrations_of_every_replica_are_one_worker_each_and_local_streams_win(assert_eventually):
    clock = ManualSleepClock()
    async with MemoryStore(clock=clock) as store:
        registry = WorkerRegistry(clock)
        store_fleet = StoreFleet(store, clock)
        fleet = MergedFleet([LocalFleet(registry), store_fleet])
        woken: list[int] = []
        fleet.subscribe(lambda: woken.append(1))
        store_fleet.start()
        try:
            assert await fleet.wait_ready(5.0)
            await register(store, "w1", "r1")
            await register(store, "w1", "r2")
            await register(store, "w2", "r2", profile="a100", pool="Tenant")
            await assert_eventually(lambda: len(woken) >= 3)
            assert await fleet.workers() == [
                FleetWorker("w1", "l4", "default", "", True),
                FleetWorker("w2", "a100", "default", "tenant", True),
            ]
            # This replica holds w1's stream and knows it is draining: that view wins.
            session = registry.new_session(
                registry_pb2.Hello(
                    worker_id="w1",
                    instance_uid="w1-uid",
                    status=registry_pb2.WorkerStatus(ready=True, machine_profile="l4", bundle="default"),
                )
            )
            registry.attach(session)
            session.set_draining()
            assert (await fleet.workers())[0] == FleetWorker("w1", "l4", "default", "", False)
            # A registration that is not one is skipped, not fatal.
            await store.put(worker_key("w3", "r1"), b"{not json")
            await register(store, "w4", "r1")

            async def w4_seen_w3_skipped():
                assert [worker.worker_id for worker in await fleet.workers()] == ["w1", "w2", "w4"]

            await assert_eventually(w4_seen_w3_skipped)
        finally:
            await store_fleet.stop()
