"""Config API replicas on a real etcd (the tests/etcd fixture): compare-and-swap under
contention, propagation between replicas and to their workers, restart of every router."""

from __future__ import annotations

import asyncio

import pytest

from mesh.coordination import EtcdStore
from mesh.errors import ErrorCode, MeshError
from mesh.router import Router
from tests.config.config_docs import NEW_MODEL, model_yaml, profile
from tests.config.conftest import MeshUnderTest, connected
from tests.etcd.conftest import EtcdProcess, fast_etcd_config

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(60)]


async def replica(mesh: MeshUnderTest, etcd: EtcdProcess, router_id: str) -> Router:
    """A router with its own etcd client, as another process would have."""
    return await mesh.router(router_id, store=EtcdStore(fast_etcd_config(etcd.endpoint)))


async def outcome(call) -> int | ErrorCode:
    try:
        return (await call).http_status
    except MeshError as error:
        return error.code


async def test_conflicting_writes_on_two_replicas_one_wins_and_the_epoch_counts_it_once(
    mesh: MeshUnderTest, etcd: EtcdProcess, assert_eventually
):
    a, b = await replica(mesh, etcd, "a"), await replica(mesh, etcd, "b")
    for round_ in range(5):
        model = f"acme/contended-{round_}"
        results = await asyncio.gather(
            outcome(
                a.config_service.add_model_config(
                    model_yaml(model, {"default": profile(max_batch_tokens=100)})
                )
            ),
            outcome(
                b.config_service.add_model_config(
                    model_yaml(model, {"default": profile(max_batch_tokens=200)})
                )
            ),
        )
        assert sorted(results, key=str) == sorted([201, ErrorCode.CONFIG_CONFLICT], key=str), results
        winner = 100 if results[0] == 201 else 200

        def agreed(model=model, winner=winner) -> None:
            for router in (a, b):
                stored = router.catalog.model(model)
                assert stored is not None and stored.profiles["default"].max_batch_tokens == winner

        await assert_eventually(agreed)
    await assert_eventually(lambda: a.config_epoch == b.config_epoch == 5)


async def test_concurrent_profiles_on_two_replicas_all_land_and_each_bumps_the_epoch_once(
    mesh: MeshUnderTest, etcd: EtcdProcess, assert_eventually
):
    a, b = await replica(mesh, etcd, "a"), await replica(mesh, etcd, "b")
    names = [f"p{index}" for index in range(8)]
    replies = await asyncio.gather(
        *(
            (a if index % 2 else b).config_service.add_model_config(model_yaml(profiles={name: profile()}))
            for index, name in enumerate(names)
        )
    )
    assert [reply.http_status for reply in replies] == [201] * len(names)
    assert sorted(profile_name for reply in replies for profile_name in reply.created_profiles) == names
    # Every lost race was re-read and re-merged, never written blind.
    assert a.config_service.stats.cas_retries + b.config_service.stats.cas_retries > 0

    def converged() -> None:
        for router in (a, b):
            assert sorted(router.catalog.model(NEW_MODEL).profiles) == names
            assert router.config_epoch == len(names)

    await assert_eventually(converged)
    # The same document on both at once: one write, one "already there".
    same = model_yaml("acme/same")
    statuses = sorted(
        reply.http_status
        for reply in await asyncio.gather(
            a.config_service.add_model_config(same), b.config_service.add_model_config(same)
        )
    )
    assert statuses == [200, 201]
    await assert_eventually(lambda: a.config_epoch == b.config_epoch == len(names) + 1)


async def test_a_write_on_one_replica_reaches_a_worker_connected_only_to_another(
    mesh: MeshUnderTest, etcd: EtcdProcess, assert_eventually
):
    a, b = await replica(mesh, etcd, "a"), await replica(mesh, etcd, "b")
    agent = await mesh.worker("only-on-b", [b])
    await assert_eventually(connected(b, "only-on-b"))

    reply = await a.config_service.add_model_config(model_yaml())
    assert reply.router_id == "a" and reply.eligible_bundles_with_workers_count == 0  # a has no workers

    await assert_eventually(lambda: b.catalog.model(NEW_MODEL) is not None)
    expected = b.catalog.bundle_config_hash("default")
    assert expected == a.catalog.bundle_config_hash("default")
    await assert_eventually(lambda: agent.bundle_config_hash == expected)

    async def acked_on_b() -> None:
        status = await b.config_service.model_status(NEW_MODEL)
        default = next(bundle for bundle in status.bundles if bundle.bundle_id == "default")
        assert default.expected_bundle_config_hash == expected
        assert default.acked_workers == ("only-on-b",), default

    await assert_eventually(acked_on_b)
    assert b.config_epoch == a.config_epoch == 1


async def test_restarting_every_router_restores_the_api_models(
    mesh: MeshUnderTest, etcd: EtcdProcess, assert_eventually
):
    a, b = await replica(mesh, etcd, "a"), await replica(mesh, etcd, "b")
    await a.config_service.add_model_config(model_yaml())
    await b.config_service.add_model_config(model_yaml("acme/other"))
    await b.config_service.add_model_config(model_yaml(profiles={"fast": profile(max_batch_tokens=64)}))
    await mesh.stop_router(a)
    await mesh.stop_router(b)

    c, d = await replica(mesh, etcd, "c"), await replica(mesh, etcd, "d")
    for router in (c, d):
        assert sorted(router.catalog.model(NEW_MODEL).profiles) == ["default", "fast"]
        assert router.catalog.model("acme/other") is not None
        assert router.config_epoch == 3
    # A worker connecting to a restarted router gets the restored models too.
    agent = await mesh.worker("w1", [c])
    await assert_eventually(lambda: agent.bundle_config_hash == c.catalog.bundle_config_hash("default"))
    assert agent.catalog.model("acme/other") is not None
