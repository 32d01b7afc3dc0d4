"""Pools across two router replicas sharing a real etcd, with real fake-backend worker agents.

The leader assigns; both replicas route `pool/profile` requests only to the
assigned workers and answer the same pool view; an assigned worker that dies
is replaced; a pool nobody renews expires and its workers return to the
shared fleet; delete does the same at once; `default` is protected.
"""

from __future__ import annotations

import collections

import pytest

from mesh.errors import ErrorCode, MeshError
from mesh.pools import GrpcPoolsClient, PoolState, pool_spec_from_json
from tests.pools.conftest import encode_request, expect_mesh_error

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(60)]


async def served_by(router, request, count: int) -> collections.Counter:
    seen: collections.Counter = collections.Counter()
    for index in range(count):
        response = await router.service.encode(
            request, timeout_s=5.0, request_id=f"{router.router_id}-{index}"
        )
        seen[response.worker_id] += 1
    return seen


async def test_two_replicas_route_a_pool_alike_and_replace_a_dead_worker(etcd_mesh, assert_eventually):
    mesh = etcd_mesh
    r1 = await mesh.start_router("r1")
    r2 = await mesh.start_router("r2")
    for worker_id in ("w1", "w2", "w3", "w4"):
        await mesh.start_worker(worker_id, "l4")
    await mesh.start_worker("a1", "a100")
    await assert_eventually(mesh.connected("w1", "w2", "w3", "w4", "a1"), timeout_s=10)
    leader = await assert_eventually(mesh.leader, timeout_s=10)
    follower = r2 if leader is r1 else r1

    # Created through the follower: any replica takes pool writes.
    created = await follower.pools.service.create_pool(
        pool_spec_from_json({"name": "Tenant", "gpus": {"l4": 2}, "ttl_seconds": 30})
    )
    assert created.created and created.pool.state is PoolState.PENDING

    async def active_with_two():
        pool = await mesh.pool_on_every_router("tenant")
        assert pool.state is PoolState.ACTIVE and len(pool.assigned_workers) == 2, pool
        return pool

    pool = await assert_eventually(active_with_two, timeout_s=10)
    assigned = set(pool.worker_ids)
    assert all(worker.gpu == "l4" and worker.bundle == "default" for worker in pool.assigned_workers)
    shared_l4 = {"w1", "w2", "w3", "w4"} - assigned
    await assert_eventually(
        mesh.routed({w: ("tenant" if w in assigned else "") for w in ("w1", "w2", "w3", "w4", "a1")}),
        timeout_s=10,
    )

    for router in (r1, r2):
        # gpu="tenant/l4": only the tenant's workers
        assert set(await served_by(router, encode_request(pool="tenant", profile="l4"), 12)) <= assigned
        # the shared fleet never lands on them
        assert not set(await served_by(router, encode_request(profile="l4"), 12)) & assigned
        # a pinned pool without a matching worker is POOL_UNAVAILABLE, never provisioning
        error = await expect_mesh_error(
            router.service.encode(
                encode_request(pool="tenant", profile="a100"), timeout_s=5.0, request_id="x"
            ),
            ErrorCode.POOL_UNAVAILABLE,
        )
        assert error.spec.http_status == 503
        await expect_mesh_error(
            router.service.encode(encode_request(pool="nobody", profile="l4"), timeout_s=5.0, request_id="y"),
            ErrorCode.POOL_UNAVAILABLE,
        )

    # An assigned worker dies: the leader replaces it with a free l4 worker, every replica follows.
    dead = min(assigned)
    await mesh.stop_worker(dead)

    async def replaced():
        pool = await mesh.pool_on_every_router("tenant")
        assert dead not in pool.worker_ids and len(pool.worker_ids) == 2 and pool.state is PoolState.ACTIVE, (
            pool
        )
        return pool

    pool = await assert_eventually(replaced, timeout_s=10)
    assert set(pool.worker_ids) - assigned <= shared_l4
    assert set(pool.worker_ids) & (assigned - {dead}) == assigned - {dead}  # the survivor stays
    await assert_eventually(
        mesh.routed({w: ("tenant" if w in pool.worker_ids else "") for w in mesh.workers}), timeout_s=10
    )
    for router in (r1, r2):
        assert set(await served_by(router, encode_request(pool="tenant", profile="l4"), 8)) <= set(
            pool.worker_ids
        )

    # The leader goes away: the other replica takes over and keeps the assignment as it was.
    await leader.stop(grace_s=0.2)
    await assert_eventually(lambda: follower.leadership.is_leader, timeout_s=10)
    kept = await follower.pools.service.get_pool("tenant")
    assert kept.worker_ids == pool.worker_ids


async def test_expiry_and_delete_return_workers_to_the_shared_fleet(etcd_mesh, assert_eventually):
    mesh = etcd_mesh
    r1 = await mesh.start_router("r1")
    await mesh.start_router("r2")
    for worker_id in ("w1", "w2", "w3"):
        await mesh.start_worker(worker_id, "l4")
    await assert_eventually(mesh.connected("w1", "w2", "w3"), timeout_s=10)
    await assert_eventually(mesh.leader, timeout_s=10)

    # Nobody renews "short": its lease ends, the record goes, its worker is shared again.
    await r1.pools.service.create_pool(
        pool_spec_from_json({"name": "short", "gpus": {"l4": 1}, "ttl_seconds": 3})
    )
    held = (await assert_eventually(lambda: _active(mesh, "short"), timeout_s=10)).worker_ids
    await assert_eventually(mesh.routed({held[0]: "short"}), timeout_s=10)
    await assert_eventually(lambda: _gone(mesh, "short"), timeout_s=15)
    await assert_eventually(mesh.routed({held[0]: ""}), timeout_s=10)

    # Delete frees at once; `default` cannot be deleted.
    await r1.pools.service.create_pool(
        pool_spec_from_json({"name": "gone", "gpus": {"l4": 2}, "ttl_seconds": 60})
    )
    held = (await assert_eventually(lambda: _active(mesh, "gone"), timeout_s=10)).worker_ids
    await assert_eventually(mesh.routed(dict.fromkeys(held, "gone")), timeout_s=10)
    await mesh.live_routers()[1].pools.service.delete_pool("gone")
    await assert_eventually(mesh.routed(dict.fromkeys(held, "")), timeout_s=10)
    for router in mesh.live_routers():
        await expect_mesh_error(router.pools.service.get_pool("gone"), ErrorCode.POOL_NOT_FOUND)
        await expect_mesh_error(router.pools.service.delete_pool("default"), ErrorCode.PERMISSION_DENIED)
    assert await r1.pools.service.list_pools() == []


async def test_the_leader_assigns_a_worker_it_holds_no_stream_of(etcd_mesh, assert_eventually):
    """The fleet view is every replica's registrations, not the leader's own streams only;
    and the pools API answers alike over gRPC from either replica."""
    mesh = etcd_mesh
    await mesh.start_router("r1")
    await mesh.start_router("r2")
    leader = await assert_eventually(mesh.leader, timeout_s=10)
    follower = next(router for router in mesh.live_routers() if router is not leader)
    await mesh.start_worker("solo", "a100", routers=[follower])
    await assert_eventually(lambda: follower.registry.get("solo") is not None, timeout_s=10)
    assert leader.registry.get("solo") is None

    async with GrpcPoolsClient([leader.address, follower.address], timeout_s=5.0) as client:
        created = await client.create_pool(pool_spec_from_json({"name": "remote", "gpus": {"a100": 1}}))
        assert created.created

        async def assigned_remotely():
            pool = await client.get_pool("remote")
            assert pool.worker_ids == ("solo",) and pool.state is PoolState.ACTIVE, pool

        await assert_eventually(assigned_remotely, timeout_s=10)
        await assert_eventually(lambda: follower.registry.get("solo").view().pool == "remote", timeout_s=10)
        response = await follower.service.encode(
            encode_request(pool="remote", profile="a100"), timeout_s=5.0, request_id="solo"
        )
        assert response.worker_id == "solo"
        # The leader holds no stream of it: a pinned request there has nowhere to go.
        await expect_mesh_error(
            leader.service.encode(
                encode_request(pool="remote", profile="a100"), timeout_s=5.0, request_id="l"
            ),
            ErrorCode.POOL_UNAVAILABLE,
        )
        assert [pool.name for pool in await client.list_pools()] == ["remote"]
        await client.delete_pool("remote")
        await expect_mesh_error(client.get_pool("remote"), ErrorCode.POOL_NOT_FOUND)


async def _active(mesh, name):
    pool = await mesh.pool_on_every_router(name)
    assert pool.state is PoolState.ACTIVE, pool
    return pool


async def _gone(mesh, name):
    for router in mesh.live_routers():
        try:
            pool = await router.pools.service.get_pool(name)
        except MeshError as error:
            assert error.code is ErrorCode.POOL_NOT_FOUND, error
        else:
            raise AssertionError(f"{router.router_id} still has {pool}")
    return True
