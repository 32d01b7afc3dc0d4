"""MemoryStore's clock-driven leases and injected outages, and choosing a store from a URL.

The same scenarios as the etcd fault tests, made deterministic by a ManualSleepClock
shared by the store and the keeper.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from mesh.coordination import (
    Backoff,
    BackoffPolicy,
    EtcdStore,
    EventKind,
    LeaseKeeper,
    LeaseKeeperConfig,
    LeaseLostError,
    ManualSleepClock,
    MemoryStore,
    open_store,
)
from mesh.errors import ErrorCode, MeshError

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(30)]


async def settle() -> None:
    """Let every ready task run (MemoryStore calls never wait on I/O)."""
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.fixture
async def clocked() -> tuple[MemoryStore, ManualSleepClock]:
    clock = ManualSleepClock()
    store = MemoryStore(clock=clock)
    await store.start()
    yield store, clock
    await store.close()


async def test_lease_expiry_follows_the_injected_clock(clocked) -> None:
    store, clock = clocked
    grant = await store.grant_lease(5.0)
    revision = await store.put("workers/w1", b"x", lease_id=grant.lease_id)
    async with store.watch_prefix("workers/", start_revision=revision + 1) as watch:
        clock.advance(4.9)
        assert await store.get("workers/w1") is not None
        assert await store.keepalive_lease(grant.lease_id) == 5.0
        clock.advance(4.9)
        assert await store.get("workers/w1") is not None
        clock.advance(0.2)
        event = await asyncio.wait_for(anext(watch), 5)  # the reaper, not a read, expired it
    assert (event.kind, event.key, event.revision) == (EventKind.DELETE, "workers/w1", revision + 1)
    assert await store.keepalive_lease(grant.lease_id) == 0.0


async def test_outage_fails_fast_pauses_watches_and_recovers(clocked) -> None:
    store, clock = clocked
    changes: list[bool] = []
    store.add_connection_listener(changes.append)
    grant = await store.grant_lease(2.0)
    revision = await store.put("workers/w1", b"x", lease_id=grant.lease_id)
    async with store.watch_prefix("workers/", start_revision=revision + 1) as watch:
        store.set_reachable(False)
        assert not store.connected and changes == [False]
        with pytest.raises(MeshError) as raised:
            await store.put("workers/w2", b"x")
        assert (
            raised.value.code == ErrorCode.STORE_UNAVAILABLE and raised.value.effective_retry_after_s == 2.0
        )
        pending = asyncio.ensure_future(anext(watch))
        clock.advance(3.0)  # the lease expires on the unreachable store...
        for _ in range(20):
            await asyncio.sleep(0)
        assert not pending.done()  # ...but the watch hears nothing while unreachable
        store.set_reachable(True)
        event = await asyncio.wait_for(pending, 5)
    assert (event.kind, event.key) == (EventKind.DELETE, "workers/w1")
    assert changes == [False, True]


async def test_keeper_loses_lease_by_local_clock_and_recovers(clocked) -> None:
    store, clock = clocked
    keeper = LeaseKeeper(store, LeaseKeeperConfig(ttl_s=3.0, retry_interval_s=0.5), clock=clock)
    first = await keeper.start()
    await keeper.put("routers/r1", b"addr")

    # Healthy: keepalives every TTL/3 keep it held through many TTLs.
    for _ in range(30):
        clock.advance(0.5)
        await settle()
        assert keeper.is_held and keeper.expires_at_s > clock.monotonic() + 1.0

    store.set_reachable(False)
    cut_at = clock.monotonic()

    while not keeper.is_lost:
        assert clock.monotonic() - cut_at <= first.ttl_s, "lease still held past its TTL"
        clock.advance(0.25)
        await settle()
    assert clock.monotonic() - cut_at <= first.ttl_s + 0.25
    with pytest.raises(LeaseLostError):
        await keeper.put("routers/r1", b"addr")
    with pytest.raises(MeshError):
        await keeper.recover()

    store.set_reachable(True)
    recovery = await keeper.recover()
    assert recovery.restored == ("routers/r1",) and keeper.is_held
    assert (await store.get("routers/r1")).lease_id == recovery.lease.lease_id
    await keeper.close()


async def test_recovery_leaves_a_key_someone_else_took(clocked) -> None:
    store, clock = clocked
    keeper = LeaseKeeper(store, LeaseKeeperConfig(ttl_s=3.0), clock=clock)
    await keeper.start()
    await keeper.put("workers/w1", b"mine")
    await keeper.put("routers/r1", b"mine")
    await store.revoke_lease(keeper.lease_id)
    await store.put("workers/w1", b"theirs")  # another router took the worker meanwhile
    with pytest.raises(LeaseLostError):
        await keeper.put("routers/r1", b"mine")  # the store refuses: that declares the loss
    assert keeper.is_lost
    recovery = await keeper.recover()
    assert recovery.restored == ("routers/r1",) and recovery.taken == ("workers/w1",)
    assert (await store.get("workers/w1")).value == b"theirs"
    assert keeper.owned_keys == ("routers/r1",)
    await keeper.close()


def test_backoff_is_jittered_capped_and_resets() -> None:
    backoff = Backoff(BackoffPolicy(initial_s=0.1, max_s=1.0), random.Random(7))
    delays = [backoff.next_delay_s() for _ in range(10)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.5 <= d <= 1.0 for d in delays[5:])
    backoff.reset()
    assert backoff.next_delay_s() <= 0.1
    with pytest.raises(ValueError):
        BackoffPolicy(initial_s=2.0, max_s=1.0)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:2379", "must start with http://"),
        ("https://127.0.0.1:2379", "TLS"),
        ("etcd://127.0.0.1:2379", "scheme must be http://"),
        ("http://127.0.0.1:99999", "port must be a number"),
        ("http://127.0.0.1:2379/v3", "only scheme, host and port"),
        ("http://:2379", "names no host"),
        ("http://a:2379,http://b:2379", "must be IP addresses"),
        ("http://127.0.0.1:2379,", "empty endpoint"),
    ],
)
def test_bad_store_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url, "/mesh/")


async def test_open_store_picks_the_implementation() -> None:
    assert isinstance(open_store(None, "/mesh"), MemoryStore)
    assert open_store(None, "/mesh").prefix == "/mesh/"
    etcd = open_store("http://127.0.0.1:2379,127.0.0.2:2379", "/other/")
    assert isinstance(etcd, EtcdStore)
    assert etcd.config.endpoints == ("127.0.0.1:2379", "127.0.0.2:2379") and etcd.prefix == "/other/"
    await etcd.close()
    with pytest.raises(ValueError, match="prefix"):
        open_store(None, "/")
