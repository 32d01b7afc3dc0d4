"""Pure pieces of HA: key layout, records, the fence book, router specs, DNS discovery."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from mesh.clock import ManualClock
from mesh.ha import (
    DiscoveryConfig,
    DnsName,
    FenceBook,
    RouterDiscovery,
    RouterRecord,
    WorkerRecord,
    dial_address,
    fence_key,
    parse_dns_spec,
    parse_fence_key,
    parse_worker_key,
    router_key,
    split_router_specs,
    worker_key,
)

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("worker_id", "other"),
    [("w1", "x"), ("team/w1", "u/../v"), ("w%2F", "uid with spaces"), ("ü-worker", "📦")],
)
def test_ids_stay_one_key_segment_and_round_trip(worker_id, other):
    assert parse_fence_key(fence_key(worker_id, other)) == (worker_id, other)
    assert parse_worker_key(worker_key(worker_id, other)) == (worker_id, other)
    assert router_key(other).count("/") == 1


def test_foreign_keys_do_not_parse():
    assert parse_fence_key("fenced/only-one-part") is None
    assert parse_fence_key("workers/a/b") is None
    assert parse_worker_key("workers/a/b/c") is None


def test_records_round_trip_and_reject_garbage():
    router = RouterRecord("r1", "10.0.0.5:50051", "0.1.0")
    assert RouterRecord.decode(router.encode()) == router
    worker = WorkerRecord("w1", "uid", "r1", bundle="default", machine_profile="l4")
    assert WorkerRecord.decode(worker.encode()) == worker
    # Unknown fields (a newer replica's) are ignored; missing required ones are not.
    assert RouterRecord.decode(b'{"router_id": "r", "address": "h:1", "zone": "a"}').address == "h:1"
    for bad in (b"not json", b"[]", b'{"router_id": "r"}', b'{"router_id": "", "address": "h:1"}'):
        with pytest.raises(ValueError):
            RouterRecord.decode(bad)


def test_a_fence_lasts_its_ttl_on_the_local_clock():
    clock = ManualClock()
    book = FenceBook(clock, ttl_s=300.0)
    assert book.add("w1", "u1") is True
    assert book.add("w1", "u1") is False
    assert book.is_fenced("w1", "u1")
    assert not book.is_fenced("w1", "u2") and not book.is_fenced("w2", "u1")
    clock.advance(299.0)
    assert book.is_fenced("w1", "u1")
    clock.advance(2.0)
    assert not book.is_fenced("w1", "u1")
    book.add("w2", "u1")
    clock.advance(301.0)
    book.prune()
    assert len(book) == 0


@pytest.mark.parametrize(
    ("specs", "static", "names"),
    [
        (["a:1", "[::1]:2"], ("a:1", "[::1]:2"), ()),
        (["dns:///router-headless:50051"], (), (DnsName("router-headless", 50051),)),
        (["a:1", "dns:///r.ns.svc.cluster.local:7"], ("a:1",), (DnsName("r.ns.svc.cluster.local", 7),)),
    ],
)
def test_router_specs_split_into_addresses_and_dns_names(specs, static, names):
    assert split_router_specs(specs) == (static, names)


@pytest.mark.parametrize(
    "spec",
    ["dns:///name", "dns://8.8.8.8/name:1", "dns:name:1", "dns:///:1", "dns:///n:0", "dns:///a/b:1", "host"],
)
def test_bad_router_specs_are_refused(spec):
    with pytest.raises(ValueError):
        split_router_specs([spec])


def test_dns_spec_and_dial_address_forms():
    assert parse_dns_spec("dns:///[::1]:5") == DnsName("::1", 5)
    assert dial_address("10.0.0.1", 5) == "10.0.0.1:5"
    assert dial_address("fd00::1", 5) == "[fd00::1]:5"


class ScriptedResolver:
    """A resolver whose answers the test sets; counts lookups."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str] | OSError] = {}
        self.lookups = 0
        self.looked_up = asyncio.Event()

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        self.looked_up.set()
        answer = self.answers[host]
        if isinstance(answer, OSError):
            raise answer
        return list(answer)


async def test_dns_discovery_follows_the_name_and_keeps_the_last_answer_on_errors(assert_eventually):
    resolver = ScriptedResolver()
    resolver.answers["routers"] = ["10.0.0.1", "10.0.0.2"]
    seen: list[frozenset[str]] = []
    config = DiscoveryConfig(static=("static:1",), dns=(DnsName("routers", 7000),), dns_refresh_s=0.05)
    discovery = RouterDiscovery(config, seen.append, resolver=resolver)
    assert discovery.current == {"static:1"}
    task = asyncio.create_task(discovery.run())
    try:
        await assert_eventually(lambda: discovery.current == {"static:1", "10.0.0.1:7000", "10.0.0.2:7000"})
        # A pod goes, another comes (a rolling restart behind a headless service).
        resolver.answers["routers"] = ["10.0.0.2", "fd00::3"]
        await assert_eventually(lambda: discovery.current == {"static:1", "10.0.0.2:7000", "[fd00::3]:7000"})
        # The resolver fails: the last answer stands.
        resolver.answers["routers"] = OSError("temporary failure in name resolution")
        failed_from = resolver.lookups
        await assert_eventually(lambda: resolver.lookups > failed_from + 2)
        assert discovery.current == {"static:1", "10.0.0.2:7000", "[fd00::3]:7000"}
        # An empty answer is an answer: no replica is ready.
        resolver.answers["routers"] = []
        await assert_eventually(lambda: discovery.current == {"static:1"})
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Every reported set differs from the one before it.
    assert all(a != b for a, b in itertools.pairwise(seen))
    assert seen[-1] == {"static:1"}


async def test_static_only_discovery_has_nothing_to_follow():
    discovery = RouterDiscovery(DiscoveryConfig(static=("a:1",)), lambda _: None)
    await asyncio.wait_for(discovery.run(), timeout=1.0)
    assert discovery.current == {"a:1"}


def test_discovery_needs_a_source():
    with pytest.raises(ValueError):
        DiscoveryConfig()
