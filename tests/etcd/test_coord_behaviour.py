"""One behavioural suite, run against MemoryStore and a real etcd, so they stay equivalent."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from mesh.coordination import (
    Condition,
    Delete,
    ElectionConfig,
    EventKind,
    LeaderElection,
    LeaseKeeper,
    LeaseKeeperConfig,
    LeaseLostError,
    Put,
    WatchEvent,
    WatchStream,
)

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(60)]

TTL_S = 2.0  # etcd's smallest lease TTL with default raft timing


async def next_events(watch: WatchStream, count: int, timeout_s: float = 10.0) -> list[WatchEvent]:
    events = []
    async with asyncio.timeout(timeout_s):
        while len(events) < count:
            events.append(await anext(watch))
    return events


async def test_put_get_delete_and_revisions(stores) -> None:
    store = await stores()
    first = await store.put("config/models/a", b"1")
    second = await store.put("config/models/a", b"2")
    assert second == first + 1

    kv = await store.get("config/models/a")
    assert kv is not None
    assert (kv.key, kv.value, kv.version, kv.mod_revision, kv.create_revision) == (
        "config/models/a",
        b"2",
        2,
        second,
        first,
    )
    await store.put("config/models/b", b"3")
    await store.put("config/other", b"x")

    snap = await store.get_prefix("config/models/")
    assert [kv.key for kv in snap.items] == ["config/models/a", "config/models/b"]
    assert snap.revision == second + 2

    assert await store.delete("config/models/a") is True
    assert await store.delete("config/models/a") is False
    assert await store.get("config/models/a") is None
    assert (await store.get_prefix("config/models/")).revision == second + 3


async def test_prefixes_isolate_meshes(stores) -> None:
    mesh_a = await stores(prefix="/mesh-a")
    mesh_b = await stores(prefix="/mesh-a-b/")
    await mesh_a.put("leader", b"a")
    await mesh_b.put("leader", b"b")
    assert (await mesh_a.get("leader")).value == b"a"
    assert [kv.key for kv in (await mesh_a.get_prefix()).items] == ["leader"]
    assert [kv.value for kv in (await mesh_b.get_prefix()).items] == [b"b"]


async def test_compare_and_swap(stores) -> None:
    store = await stores()
    created = await store.create_if_absent("pools/p", b"v1")
    assert created.succeeded
    again = await store.create_if_absent("pools/p", b"other")
    assert not again.succeeded
    assert again.current["pools/p"].value == b"v1"

    stale = await store.put_if_revision("pools/p", b"v2", created.revision - 1)
    assert not stale.succeeded and stale.current["pools/p"].mod_revision == created.revision
    swapped = await store.put_if_revision("pools/p", b"v2", created.revision)
    assert swapped.succeeded and swapped.revision == created.revision + 1
    assert (await store.get("pools/p")).value == b"v2"

    both = await store.txn(
        [Condition.at_revision("pools/p", swapped.revision), Condition.absent("pools/q")],
        [Put("pools/q", b"q"), Delete("pools/p")],
    )
    assert both.succeeded
    assert await store.get("pools/p") is None
    assert (await store.get("pools/q")).mod_revision == both.revision


async def test_put_and_bump_is_atomic_under_concurrency(stores) -> None:
    writers = [await stores(), await stores()]
    per_writer = 12

    async def write_all(index: int) -> list[int]:
        counters = []
        for n in range(per_writer):
            result = await writers[index].put_and_bump(
                f"config/models/w{index}-{n}", b"yaml", counter_key="config/epoch", expected_mod_revision=0
            )
            assert result.succeeded
            counters.append(result.counter)
        return counters

    results = await asyncio.gather(write_all(0), write_all(1))
    seen = sorted(results[0] + results[1])
    assert seen == list(range(1, 2 * per_writer + 1)), "every bump counted once"
    assert (await writers[0].get("config/epoch")).value == str(2 * per_writer).encode()
    assert len((await writers[0].get_prefix("config/models/")).items) == 2 * per_writer

    # Two writers racing a CAS on the same key: exactly one wins, the loser sees the winner.
    base = (await writers[0].get("config/models/w0-0")).mod_revision
    race = await asyncio.gather(
        *(
            w.put_and_bump(
                "config/models/w0-0", f"v{i}".encode(), counter_key="config/epoch", expected_mod_revision=base
            )
            for i, w in enumerate(writers)
        )
    )
    assert sorted(r.succeeded for r in race) == [False, True]
    winner = next(r for r in race if r.succeeded)
    loser = next(r for r in race if not r.succeeded)
    assert loser.current is not None and loser.current.mod_revision == winner.revision
    assert winner.counter == 2 * per_writer + 1
    assert (await writers[1].get("config/epoch")).value == str(2 * per_writer + 1).encode()


async def test_watch_delivers_puts_deletes_and_txns_in_order(stores) -> None:
    store = await stores()
    await store.put("workers/before", b"0")
    snap = await store.get_prefix("workers/")
    async with store.watch_prefix("workers/", start_revision=snap.revision + 1) as watch:
        await store.put("workers/a", b"1")
        await store.put("routers/r", b"not watched")
        await store.txn([], [Put("workers/b", b"2"), Put("workers/c", b"3")])
        await store.delete("workers/a")
        events = await next_events(watch, 4)
    assert [(e.kind, e.key) for e in events] == [
        (EventKind.PUT, "workers/a"),
        (EventKind.PUT, "workers/b"),
        (EventKind.PUT, "workers/c"),
        (EventKind.DELETE, "workers/a"),
    ]
    assert events[1].revision == events[2].revision, "one transaction, one revision"
    assert events[0].revision < events[1].revision < events[3].revision
    assert events[0].value == b"1" and events[0].kv.version == 1


async def test_watch_from_compacted_revision_resyncs(stores) -> None:
    store = await stores()
    await store.put("pools/a", b"1")
    start = await store.put("pools/b", b"1")
    await store.delete("pools/a")
    await store.put("pools/c", b"1")
    latest = await store.put("pools/b", b"2")
    await store.compact(latest)
    await store.compact(latest)  # idempotent
    with pytest.raises(ValueError):
        await store.compact(latest + 100)

    async with store.watch_prefix("pools/", start_revision=start) as watch:
        [resync] = await next_events(watch, 1)
        assert resync.kind == EventKind.RESYNC
        assert resync.revision == latest
        assert [(kv.key, kv.value) for kv in resync.snapshot] == [("pools/b", b"2"), ("pools/c", b"1")]
        await store.put("pools/d", b"1")
        [after] = await next_events(watch, 1)
    assert (after.kind, after.key, after.revision) == (EventKind.PUT, "pools/d", latest + 1)


async def test_lease_keepalive_keeps_key_past_ttl_and_expiry_deletes(stores, assert_eventually) -> None:
    store = await stores()
    keeper = LeaseKeeper(store, LeaseKeeperConfig(ttl_s=TTL_S))
    grant = await keeper.start()
    assert grant.ttl_s >= TTL_S
    await keeper.put("routers/r1", b"addr")
    assert (await store.get("routers/r1")).lease_id == grant.lease_id

    # Keepalives carry the lease well past its TTL (polled on the keeper's own deadline).
    granted_at = time.monotonic()  # the keeper runs on the system clock
    await assert_eventually(
        lambda: keeper.expires_at_s > granted_at + 2.5 * grant.ttl_s,
        timeout_s=4 * grant.ttl_s,
    )
    assert keeper.is_held
    assert (await store.get("routers/r1")).lease_id == grant.lease_id

    # Keepalive stops without a revoke: the store expires the key on its own.
    await keeper.close(revoke=False)
    stopped_at = time.monotonic()
    await assert_eventually(lambda: _absent(store, "routers/r1"), timeout_s=4 * grant.ttl_s + 2)
    assert time.monotonic() - stopped_at > 0.5  # expired, not deleted at once


async def test_revoke_deletes_at_once_and_dead_lease_refuses_writes(stores) -> None:
    store = await stores()
    grant = await store.grant_lease(TTL_S)
    await store.put("workers/w1", b"x", lease_id=grant.lease_id)
    await store.put("workers/w2", b"x", lease_id=grant.lease_id)
    assert await store.keepalive_lease(grant.lease_id) >= TTL_S
    await store.revoke_lease(grant.lease_id)
    assert (await store.get_prefix("workers/")).items == ()
    await store.revoke_lease(grant.lease_id)  # already gone: no error
    assert await store.keepalive_lease(grant.lease_id) == 0.0
    with pytest.raises(LeaseLostError):
        await store.put("workers/w1", b"x", lease_id=grant.lease_id)
    with pytest.raises(LeaseLostError):
        await store.txn([], [Put("workers/w1", b"x", grant.lease_id)])


async def test_keeper_notices_lease_expired_in_store(stores) -> None:
    store = await stores()
    lost = []
    keeper = LeaseKeeper(store, LeaseKeeperConfig(ttl_s=TTL_S), on_lost=lost.append)
    await keeper.start()
    await keeper.put("routers/r1", b"addr")
    await store.revoke_lease(keeper.lease_id)  # as if it had expired
    async with asyncio.timeout(3 * TTL_S):
        await keeper.wait_lost()
    assert not keeper.is_held and lost
    with pytest.raises(LeaseLostError):
        await keeper.put("routers/r1", b"addr")

    recovery = await keeper.recover()
    assert recovery.restored == ("routers/r1",) and recovery.taken == ()
    assert keeper.is_held
    assert (await store.get("routers/r1")).lease_id == recovery.lease.lease_id
    await keeper.close()
    assert await store.get("routers/r1") is None


async def test_election_one_leader_and_takeover(stores, assert_eventually) -> None:
    replica_a, replica_b = await stores(), await stores()
    keeper_a = LeaseKeeper(replica_a, LeaseKeeperConfig(ttl_s=TTL_S))
    keeper_b = LeaseKeeper(replica_b, LeaseKeeperConfig(ttl_s=TTL_S))
    await keeper_a.start()
    await keeper_b.start()
    config = ElectionConfig(key="leader")
    a = LeaderElection(replica_a, keeper_a, "router-a", config)
    b = LeaderElection(replica_b, keeper_b, "router-b", config)

    observed: list[str | None] = []

    async def observe() -> None:
        async for leader in b.observe():
            observed.append(leader)

    observer = asyncio.create_task(observe())
    await a.campaign()
    b_campaign = asyncio.create_task(b.campaign())
    try:
        await assert_eventually(lambda: observed[-1:] == ["router-a"], timeout_s=10)
        assert a.is_leader and not b.is_leader and not b_campaign.done()
        assert await b.leader() == "router-a"

        # The leader's lease ends (closed and revoked): b takes over within seconds.
        await keeper_a.close()
        async with asyncio.timeout(5):
            await b_campaign
        async with asyncio.timeout(5):
            await a.wait_not_leader()
        assert b.is_leader and not a.is_leader
        assert await a.leader() == "router-b"
        await assert_eventually(lambda: observed[-1:] == ["router-b"], timeout_s=10)

        # Resigning hands over too.
        keeper_a2 = LeaseKeeper(replica_a, LeaseKeeperConfig(ttl_s=TTL_S))
        await keeper_a2.start()
        a2 = LeaderElection(replica_a, keeper_a2, "router-a", config)
        a2_campaign = asyncio.create_task(a2.campaign())
        await b.resign()
        assert not b.is_leader
        async with asyncio.timeout(5):
            await a2_campaign
        assert a2.is_leader
        await a2.close()
        await keeper_a2.close()
    finally:
        observer.cancel()
        b_campaign.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await observer
        with contextlib.suppress(asyncio.CancelledError, LeaseLostError):
            await b_campaign
        await b.close()
        await keeper_b.close()
    assert observed[0] in (None, "router-a")
    assert "router-b" in observed


async def test_leader_steps_down_when_its_key_is_deleted(stores) -> None:
    store = await stores()
    keeper = LeaseKeeper(store, LeaseKeeperConfig(ttl_s=TTL_S))
    await keeper.start()
    election = LeaderElection(store, keeper, "router-a")
    await election.campaign()
    assert election.is_leader
    await store.delete("leader")  # an operator's manual failover
    async with asyncio.timeout(5):
        await election.wait_not_leader()
    assert not election.is_leader
    await election.close()
    await keeper.close()


async def _absent(store, key: str) -> bool:
    return await store.get(key) is None
