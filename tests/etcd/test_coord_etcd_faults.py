"""EtcdStore under faults: etcd SIGKILLed and restarted on the same ports and data."""

from __future__ import annotations

import asyncio
import time

import pytest

from mesh.coordination import (
    EventKind,
    LeaseKeeper,
    LeaseKeeperConfig,
    LeaseLostError,
    ManualSleepClock,
    ResumableWatch,
    WatchEvent,
)
from mesh.errors import ErrorCode, MeshError

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(90)]

TTL_S = 2.0


async def create_retrying(store, key: str, value: bytes, timeout_s: float = 15.0) -> None:
    """Write `key` once, retrying through an outage; idempotent, so a lost answer cannot double it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = await store.create_if_absent(key, value)
            if result.succeeded or result.current[key].value == value:
                return
            raise AssertionError(f"{key} already held {result.current[key]}")
        except MeshError as error:
            assert error.code == ErrorCode.STORE_UNAVAILABLE
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_etcd_down_fails_fast_then_reconnects_by_itself(etcd, etcd_stores, assert_eventually) -> None:
    store = await etcd_stores()
    changes: list[bool] = []
    store.add_connection_listener(changes.append)
    await store.put("routers/r1", b"up")
    await assert_eventually(lambda: store.connected, timeout_s=10)

    etcd.kill()
    for attempt in range(3):
        started = time.monotonic()
        with pytest.raises(MeshError) as raised:
            await store.put("routers/r1", f"down-{attempt}".encode())
        elapsed = time.monotonic() - started
        assert raised.value.code == ErrorCode.STORE_UNAVAILABLE
        assert raised.value.effective_retry_after_s == store.config.retry_after_s
        assert elapsed < store.config.op_timeout_s + 1.0, f"write took {elapsed:.2f}s with etcd down"
    with pytest.raises(MeshError) as raised:
        await store.get_prefix("routers/")
    assert raised.value.code == ErrorCode.STORE_UNAVAILABLE
    await assert_eventually(lambda: not store.connected, timeout_s=10)

    await etcd.restart()
    restarted_at = time.monotonic()
    await assert_eventually(lambda: store.connected, timeout_s=15)
    assert time.monotonic() - restarted_at < 10
    await store.put("routers/r1", b"back")
    assert (await store.get("routers/r1")).value == b"back"
    assert changes[-2:] == [False, True]


async def test_silent_etcd_cannot_hang_calls_or_hide_a_lost_lease(
    etcd, etcd_stores, assert_eventually
) -> None:
    store = await etcd_stores()
    keeper = LeaseKeeper(store, LeaseKeeperConfig(ttl_s=TTL_S))
    grant = await keeper.start()
    await keeper.put("routers/r1", b"addr")
    etcd.pause()  # connections stay open; nothing answers
    try:
        started = time.monotonic()
        with pytest.raises(MeshError) as raised:
            await store.put("routers/r2", b"x")
        assert raised.value.code == ErrorCode.STORE_UNAVAILABLE
        assert time.monotonic() - started < store.config.op_timeout_s + 1.0
        async with asyncio.timeout(3 * grant.ttl_s):
            await keeper.wait_lost()
        await assert_eventually(lambda: not store.connected, timeout_s=10)
    finally:
        etcd.resume()
    await assert_eventually(lambda: store.connected, timeout_s=15)
    recovery = await keeper.recover()
    assert recovery.restored == ("routers/r1",)
    await keeper.close()


async def test_lease_lost_by_local_clock_while_etcd_down_then_regranted(
    etcd, etcd_stores, assert_eventually
) -> None:
    store = await etcd_stores()
    lost_at: list[float] = []
    keeper = LeaseKeeper(
        store, LeaseKeeperConfig(ttl_s=TTL_S), on_lost=lambda _grant: lost_at.append(time.monotonic())
    )
    first = await keeper.start()
    await keeper.put("routers/r1", b"addr")

    killed_at = time.monotonic()
    etcd.kill()
    async with asyncio.timeout(3 * first.ttl_s):
        await keeper.wait_lost()
    assert not etcd.running, "loss must be declared from the local clock, with etcd still down"
    # The last keepalive succeeded at most a third of the TTL before the kill.
    assert lost_at[0] - killed_at <= first.ttl_s + 0.5
    assert not keeper.is_held
    with pytest.raises(LeaseLostError):
        keeper.check_held()
    with pytest.raises(MeshError) as raised:
        await keeper.recover()
    assert raised.value.code == ErrorCode.STORE_UNAVAILABLE

    await etcd.restart()
    recoveries = []

    async def recovered() -> bool:
        try:
            recoveries.append(await keeper.recover())
        except MeshError:
            return False
        return True

    await assert_eventually(recovered, timeout_s=15)
    recovery = recoveries[-1]
    assert recovery.lease.lease_id != first.lease_id
    assert recovery.restored == ("routers/r1",)
    assert keeper.is_held
    assert (await store.get("routers/r1")).lease_id == recovery.lease.lease_id
    # etcd renews every lease on restart; recovery ended the old one explicitly.
    assert await store.keepalive_lease(first.lease_id) == 0.0
    await keeper.close()
    assert await store.get("routers/r1") is None


async def test_outage_shorter_than_ttl_keeps_the_lease(etcd, etcd_stores, assert_eventually) -> None:
    store = await etcd_stores()
    lost = []
    keeper = LeaseKeeper(store, LeaseKeeperConfig(ttl_s=4.0, retry_interval_s=0.2), on_lost=lost.append)
    grant = await keeper.start()
    await keeper.put("routers/r1", b"addr")
    etcd.kill()
    await etcd.restart()
    restarted_at = time.monotonic()
    # A retried keepalive lands after the restart, before the local deadline.
    await assert_eventually(lambda: keeper.expires_at_s >= restarted_at + grant.ttl_s, timeout_s=grant.ttl_s)
    assert keeper.is_held and not lost
    assert (await store.get("routers/r1")).lease_id == grant.lease_id
    await keeper.close()


async def test_watch_is_exactly_once_across_kill_and_restart(etcd, etcd_stores, assert_eventually) -> None:
    writer, reader = await etcd_stores(), await etcd_stores()
    snap = await reader.get_prefix("config/")
    received: list[WatchEvent] = []
    expected: list[str] = []

    async with reader.watch_prefix("config/", start_revision=snap.revision + 1) as watch:
        assert isinstance(watch, ResumableWatch)

        async def drain_until(count: int) -> None:
            async with asyncio.timeout(30):
                while len(received) < count:
                    received.append(await anext(watch))

        for n in range(5):
            expected.append(f"config/models/before-{n}")
            await writer.create_if_absent(expected[-1], b"v")
        await drain_until(len(expected))

        etcd.kill()
        await assert_eventually(lambda: not watch.connected, timeout_s=10)
        await etcd.restart()
        for n in range(5):  # right after the restart, racing the watch's reconnect
            expected.append(f"config/models/during-{n}")
            await create_retrying(writer, expected[-1], b"v")
        await drain_until(len(expected))
        for n in range(5):
            expected.append(f"config/models/after-{n}")
            await writer.create_if_absent(expected[-1], b"v")
        await drain_until(len(expected))

        # Nothing extra queued behind them: the next event is the marker.
        await writer.put("config/marker", b"end")
        await drain_until(len(expected) + 1)
        assert watch.streams_opened >= 2, "the watch must have resumed on a new stream"

    puts = received[:-1]
    assert all(e.kind == EventKind.PUT for e in puts)
    assert [e.key for e in puts] == expected, "every write exactly once, in order"
    revisions = [e.revision for e in received]
    assert revisions == sorted(set(revisions)), "strictly increasing revisions"
    final = (await writer.get_prefix("config/models/")).as_dict()
    assert {e.key: e.revision for e in puts} == {k: kv.mod_revision for k, kv in final.items()}
    assert received[-1].key == "config/marker"


async def test_watch_resyncs_after_history_compacted_while_disconnected(
    etcd, etcd_stores, assert_eventually
) -> None:
    clock = ManualSleepClock()  # holds the watch's reconnect backoff until the test moves time
    writer, reader = await etcd_stores(), await etcd_stores(clock=clock)
    await writer.put("pools/a", b"1")
    snap = await reader.get_prefix("pools/")
    async with reader.watch_prefix("pools/", start_revision=snap.revision + 1) as watch:
        await writer.put("pools/b", b"1")
        first = await asyncio.wait_for(anext(watch), 10)
        assert (first.kind, first.key) == (EventKind.PUT, "pools/b")

        etcd.kill()
        await assert_eventually(lambda: not watch.connected and clock.sleepers > 0, timeout_s=10)
        await etcd.restart()
        await create_retrying(writer, "pools/c", b"1")
        await writer.delete("pools/a")
        latest = await writer.put("pools/b", b"2")
        await writer.compact(latest)

        def nudge() -> bool:
            clock.advance(5.0)
            return watch.streams_opened >= 2 or watch.last_revision >= latest

        await assert_eventually(nudge, timeout_s=10)
        resync = await asyncio.wait_for(anext(watch), 10)
        assert resync.kind == EventKind.RESYNC and resync.revision >= latest
        assert [(kv.key, kv.value) for kv in resync.snapshot] == [("pools/b", b"2"), ("pools/c", b"1")]
        revision = await writer.put("pools/d", b"1")
        after = await asyncio.wait_for(anext(watch), 10)
        assert (after.kind, after.key, after.revision) == (EventKind.PUT, "pools/d", revision)


async def test_watch_opened_while_etcd_down_starts_when_it_returns(etcd, etcd_stores) -> None:
    store = await etcd_stores()
    revision = await store.put("workers/w0", b"x")
    etcd.kill()
    async with store.watch_prefix("workers/", start_revision=revision + 1) as watch:
        await etcd.restart()
        await create_retrying(store, "workers/w1", b"x")
        event = await asyncio.wait_for(anext(watch), 15)
    assert (event.kind, event.key) == (EventKind.PUT, "workers/w1")
