"""Pool lifecycle on the embedded store with a manual clock: create, renew, assign, expire, delete.

Real `MemoryStore` (leases expire on the injected clock), real registry and
routing sync; the leader's pass is driven by hand (`reconcile_once`), so
every step is deterministic and nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json

import pytest

from mesh.coordination import Condition, ManualSleepClock, MemoryStore
from mesh.errors import ErrorCode, MeshError
from mesh.pools import (
    AssignerConfig,
    LocalFleet,
    PoolAssigner,
    PoolLimits,
    PoolRoutingSync,
    PoolService,
    PoolState,
    PoolStore,
    pool_key,
    pool_spec_from_json,
)
from mesh.pools.records import Pool, encode_pool
from mesh.registry import WorkerRegistry
from mesh.v1 import registry_pb2

pytestmark = pytest.mark.timeout(20)

TTL_S = 30.0


class Mesh:
    """One embedded router's pool machinery on a manual clock."""

    def __init__(self) -> None:
        self.clock = ManualSleepClock()
        self.store = MemoryStore(clock=self.clock)
        self.registry = WorkerRegistry(self.clock)
        self.pools = PoolStore(self.store, self.clock)
        self.service = PoolService(self.pools, self.clock, limits=PoolLimits(min_ttl_s=1.0))
        self.assigner = PoolAssigner(self.pools, LocalFleet(self.registry), self.clock, AssignerConfig())
        self.routing = PoolRoutingSync(self.store, self.registry, self.clock)
        self.sessions = {}

    def connect(
        self, worker_id: str, profile: str = "l4", *, bundle: str = "default", pool: str = ""
    ) -> None:
        hello = registry_pb2.Hello(
            worker_id=worker_id,
            instance_uid=f"{worker_id}-uid",
            status=registry_pb2.WorkerStatus(ready=True, machine_profile=profile, bundle=bundle, pool=pool),
        )
        session = self.registry.new_session(hello)
        self.registry.attach(session)
        self.sessions[worker_id] = session

    def disconnect(self, worker_id: str) -> None:
        session = self.sessions.pop(worker_id)
        session.close("test")
        self.registry.detach(session)

    def routed_pool(self, worker_id: str) -> str:
        return self.sessions[worker_id].view().pool

    async def create(self, **body):
        return await self.service.create_pool(pool_spec_from_json({"ttl_seconds": TTL_S, **body}))


@pytest.fixture
async def mesh():
    mesh = Mesh()
    await mesh.store.start()
    mesh.routing.start()
    assert await mesh.routing.wait_synced(5.0)
    yield mesh
    await mesh.routing.stop()
    await mesh.store.close()


async def test_create_assign_and_route(mesh, assert_eventually):
    for worker_id in ("w1", "w2", "w3"):
        mesh.connect(worker_id)
    created = await mesh.create(name="Tenant", gpus={"L4": 2})
    assert created.created
    assert created.pool.name == "tenant"
    assert created.pool.state is PoolState.PENDING and created.pool.assigned_workers == ()

    report = await mesh.assigner.reconcile_once()
    assert report.written == ("tenant",)
    pool = await mesh.service.get_pool("TENANT")
    assert pool.state is PoolState.ACTIVE
    assert [(w.name, w.gpu, w.bundle) for w in pool.assigned_workers] == [
        ("w1", "l4", "default"),
        ("w2", "l4", "default"),
    ]

    def routed():
        assert [mesh.routed_pool(w) for w in ("w1", "w2", "w3")] == ["tenant", "tenant", ""]

    await assert_eventually(routed)
    # A second pass with nothing new writes nothing.
    assert (await mesh.assigner.reconcile_once()).written == ()


async def test_create_again_renews_and_keeps_the_assignment(mesh):
    mesh.connect("w1")
    first = await mesh.create(name="t", gpus={"l4": 1})
    await mesh.assigner.reconcile_once()
    mesh.clock.advance(10)
    again = await mesh.create(name="t", gpus={"l4": 1})
    assert not again.created
    assert again.pool.created_at_s == first.pool.created_at_s
    assert again.pool.last_renewed_s == first.pool.last_renewed_s + 10
    assert again.pool.state is PoolState.ACTIVE
    assert again.pool.worker_ids == ("w1",)


async def test_create_with_a_new_spec_updates_it_and_the_leader_follows(mesh):
    for worker_id in ("w1", "w2", "w3"):
        mesh.connect(worker_id)
    await mesh.create(name="t", gpus={"l4": 1})
    await mesh.assigner.reconcile_once()
    updated = await mesh.create(name="t", gpus={"l4": 3})
    assert not updated.created
    assert updated.pool.state is PoolState.PENDING  # the old verdict no longer holds
    await mesh.assigner.reconcile_once()
    pool = await mesh.service.get_pool("t")
    assert pool.worker_ids == ("w1", "w2", "w3") and pool.state is PoolState.ACTIVE


async def test_a_new_ttl_moves_the_pool_to_a_new_lease(mesh):
    await mesh.create(name="t")
    old = await mesh.pools.get("t")
    updated = await mesh.create(name="t", ttl_seconds=120)
    assert not updated.created
    new = await mesh.pools.get("t")
    assert new.lease_id != old.lease_id
    assert new.pool.ttl_s == 120
    mesh.clock.advance(TTL_S + 1)  # the old lease's TTL: revoked, and the record is not on it
    assert (await mesh.service.get_pool("t")).spec.ttl_s == 120


async def test_renewal_keeps_the_pool_alive(mesh):
    await mesh.create(name="t")
    for _ in range(4):
        mesh.clock.advance(TTL_S * 0.6)
        await mesh.service.renew_pool("t")
    pool = await mesh.service.get_pool("t")
    assert pool.last_renewed_s == mesh.clock.wall()
    assert pool.state is PoolState.PENDING


async def test_ttl_expiry_returns_the_workers_to_the_fleet(mesh, assert_eventually):
    mesh.connect("w1")
    mesh.connect("w2")
    await mesh.create(name="short", gpus={"l4": 2})
    await mesh.assigner.reconcile_once()
    await assert_eventually(lambda: mesh.routed_pool("w1") == "short" and mesh.routed_pool("w2") == "short")

    mesh.clock.advance(TTL_S + 0.1)  # nobody renewed: the lease ends and takes the record with it
    with pytest.raises(MeshError) as caught:
        await mesh.service.get_pool("short")
    assert caught.value.code is ErrorCode.POOL_NOT_FOUND
    await assert_eventually(lambda: mesh.routed_pool("w1") == "" and mesh.routed_pool("w2") == "")
    with pytest.raises(MeshError) as caught:
        await mesh.service.renew_pool("short")
    assert caught.value.code is ErrorCode.POOL_NOT_FOUND

    # The freed workers are assignable to another pool at once.
    await mesh.create(name="next", gpus={"l4": 2})
    await mesh.assigner.reconcile_once()
    assert (await mesh.service.get_pool("next")).worker_ids == ("w1", "w2")


async def test_a_dead_worker_is_replaced_and_the_pool_goes_pending_without_spare(mesh, assert_eventually):
    for worker_id in ("w1", "w2", "w3"):
        mesh.connect(worker_id)
    await mesh.create(name="t", gpus={"l4": 2})
    await mesh.assigner.reconcile_once()
    mesh.disconnect("w1")
    await mesh.assigner.reconcile_once()
    pool = await mesh.service.get_pool("t")
    assert pool.worker_ids == ("w2", "w3") and pool.state is PoolState.ACTIVE
    await assert_eventually(lambda: mesh.routed_pool("w3") == "t")
    mesh.disconnect("w2")
    await mesh.assigner.reconcile_once()
    pool = await mesh.service.get_pool("t")
    assert pool.worker_ids == ("w3",) and pool.state is PoolState.PENDING


async def test_delete_frees_the_workers_and_default_is_protected(mesh, assert_eventually):
    mesh.connect("w1")
    await mesh.create(name="t", gpus={"l4": 1})
    await mesh.assigner.reconcile_once()
    await assert_eventually(lambda: mesh.routed_pool("w1") == "t")
    await mesh.service.delete_pool("T")
    await assert_eventually(lambda: mesh.routed_pool("w1") == "")
    for call in (mesh.service.delete_pool("t"), mesh.service.get_pool("t"), mesh.service.renew_pool("t")):
        with pytest.raises(MeshError) as caught:
            await call
        assert caught.value.code is ErrorCode.POOL_NOT_FOUND
        assert caught.value.spec.http_status == 404
    for call in (mesh.service.delete_pool("default"), mesh.create(name="Default")):
        with pytest.raises(MeshError) as caught:
            await call
        assert caught.value.code is ErrorCode.PERMISSION_DENIED
        assert caught.value.spec.http_status == 403


async def test_list_is_sorted_and_shows_every_pool(mesh):
    await mesh.create(name="b")
    await mesh.create(name="a", gpus={"t4": 1})
    assert [pool.name for pool in await mesh.service.list_pools()] == ["a", "b"]


async def test_a_statically_reserved_worker_serves_only_its_own_pool(mesh, assert_eventually):
    mesh.connect("static-a", pool="a")
    mesh.connect("shared")
    await mesh.create(name="b", gpus={"l4": 1})
    await mesh.create(name="a", gpus={"l4": 1})
    await mesh.assigner.reconcile_once()
    assert (await mesh.service.get_pool("a")).worker_ids == ("static-a",)
    assert (await mesh.service.get_pool("b")).worker_ids == ("shared",)
    await assert_eventually(lambda: mesh.routed_pool("shared") == "b")
    assert mesh.routed_pool("static-a") == "a"


async def test_the_leader_removes_a_pool_whose_lease_outlived_its_ttl(mesh, assert_eventually):
    # etcd extends leases across its own leader changes: a record can outlive its TTL.
    mesh.connect("w1")
    lingering = await mesh.store.grant_lease(3600)
    stale = Pool(
        spec=dataclasses.replace(pool_spec_from_json({"name": "old", "gpus": {"l4": 1}}), ttl_s=TTL_S),
        state=PoolState.ACTIVE,
        created_at_s=mesh.clock.wall() - 100,
        last_renewed_s=mesh.clock.wall() - TTL_S - 5,
    )
    stale = dataclasses.replace(stale, assigned_workers=())
    await mesh.store.put(pool_key("old"), encode_pool(stale), lease_id=lingering.lease_id)
    assert (await mesh.service.get_pool("old")).state is PoolState.EXPIRED
    # Measured on the leader's own clock from when it first saw this version of the record
    # (last_renewed is another replica's wall clock, possibly skewed): nothing yet.
    assert (await mesh.assigner.reconcile_once()).expired == ()
    mesh.clock.advance(TTL_S + AssignerConfig().expiry_grace_s + 0.1)
    report = await mesh.assigner.reconcile_once()
    assert report.expired == ("old",)
    assert await mesh.pools.get("old") is None


async def test_a_renewed_pool_is_never_removed_whatever_its_clock_says(mesh):
    await mesh.create(name="t")
    for _ in range(5):
        await mesh.assigner.reconcile_once()
        mesh.clock.advance(TTL_S * 0.7)
        await mesh.service.renew_pool("t")
    assert (await mesh.assigner.reconcile_once()).expired == ()
    assert (await mesh.service.get_pool("t")).state is PoolState.ACTIVE  # it asks for nothing: met


async def test_a_stale_assignment_write_loses_to_a_renewal(mesh):
    await mesh.create(name="t")
    read = await mesh.pools.get("t")
    await mesh.service.renew_pool("t")
    assert not await mesh.pools.write_assignment(read, [], PoolState.ACTIVE)
    assert (await mesh.service.get_pool("t")).state is PoolState.PENDING


async def test_writes_while_the_store_is_down_are_retryable_503s(mesh):
    await mesh.create(name="t")
    mesh.store.set_reachable(False)
    calls = [
        mesh.create(name="t2"),
        mesh.service.renew_pool("t"),
        mesh.service.delete_pool("t"),
        mesh.service.get_pool("t"),
        mesh.service.list_pools(),
    ]
    for call in calls:
        with pytest.raises(MeshError) as caught:
            await call
        assert caught.value.code is ErrorCode.STORE_UNAVAILABLE
        assert caught.value.spec.http_status == 503 and caught.value.effective_retry_after_s > 0
    mesh.store.set_reachable(True)
    await mesh.service.renew_pool("t")


async def test_the_stored_record_is_the_references_pool_json(mesh):
    mesh.connect("w1")
    await mesh.create(name="t", gpus={"l4": 1})
    await mesh.assigner.reconcile_once()
    stored = json.loads((await mesh.store.get(pool_key("t"))).value)
    assert stored == {
        "name": "t",
        "spec": {
            "name": "t",
            "bundle": None,
            "gpus": {"l4": 1},
            "gpu_caps": {},
            "ttl_seconds": 30,
            "minimum_worker_count": 0,
        },
        "status": {
            "state": "active",
            "assigned_workers": [{"name": "w1", "url": "", "gpu": "l4", "bundle": "default"}],
            "created_at": mesh.clock.wall(),
            "last_renewed": mesh.clock.wall(),
        },
    }


async def test_a_deposed_leaders_writes_fail(mesh):
    mesh.connect("w1")
    await mesh.create(name="t", gpus={"l4": 1})
    not_the_leader = [Condition.held_by("leader", 0x999)]
    current = await mesh.pools.get("t")
    assert not await mesh.pools.write_assignment(current, [], PoolState.ACTIVE, not_the_leader)
    deposed = PoolAssigner(mesh.pools, LocalFleet(mesh.registry), mesh.clock, fence=lambda: not_the_leader)
    report = await deposed.reconcile_once()
    assert report.written == () and report.conflicts == ("t",)
    assert (await mesh.service.get_pool("t")).worker_ids == ()


async def test_a_new_leader_lets_the_fleet_settle_before_deciding(mesh, assert_eventually):
    mesh.connect("w1")
    await mesh.create(name="t", gpus={"l4": 1})
    await mesh.assigner.reconcile_once()
    mesh.disconnect("w1")  # as after a router restart: w1 has not reconnected yet
    leader = PoolAssigner(mesh.pools, LocalFleet(mesh.registry), mesh.clock, AssignerConfig(settle_s=3.0))
    leader.fleet_view_since_s = mesh.clock.monotonic()
    task = asyncio.create_task(leader.lead())
    try:
        await assert_eventually(lambda: mesh.clock.sleepers >= 1)
        mesh.clock.advance(1.0)
        assert leader.passes == 0
        mesh.connect("w1")
        mesh.clock.advance(2.5)
        await assert_eventually(lambda: leader.passes >= 1)
        pool = await mesh.service.get_pool("t")
        assert pool.worker_ids == ("w1",) and pool.state is PoolState.ACTIVE
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
