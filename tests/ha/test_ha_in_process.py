"""HA behaviour with in-process routers on a real etcd: registrations, fences, leadership, discovery.

Faster and more precise than the process tests: the test reaches into each
router (its registry, its leadership) and drives workers through scripted
streams, so one replica can be made to see silence while another does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from mesh.catalog import load_catalog
from mesh.coordination import Delete, EtcdStore, Put
from mesh.errors import MeshError
from mesh.ha import ReplicaConfig, WorkerRecord, fence_key, read_routers, worker_key
from mesh.router import Router, RouterConfig
from mesh.services import RegistrySettings
from tests.etcd.conftest import EtcdProcess, etcd, fast_etcd_config  # noqa: F401 - the etcd fixture, reused
from tests.ha.conftest import PREFIX, first_reply_to_hello
from tests.wire.scripted_worker import ScriptedWorker, answer_encode, status
from worker_agent import AgentConfig, FakeBackend, LinkSettings, ReconnectPolicy, WorkerAgent

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(60)]

FAST_LINK = LinkSettings(
    connect_timeout_s=2.0,
    write_timeout_s=2.0,
    close_timeout_s=0.5,
    reconnect=ReconnectPolicy(initial_s=0.02, multiplier=2.0, max_s=0.2),
)


@dataclass
class Replicas:
    etcd: EtcdProcess
    routers: list[Router] = field(default_factory=list)
    workers: list[ScriptedWorker] = field(default_factory=list)
    agents: list[WorkerAgent] = field(default_factory=list)

    async def router(self, router_id: str, *, lease_ttl_s: float = 3.0) -> Router:
        router = Router(
            RouterConfig(
                host="127.0.0.1",
                port=0,
                router_id=router_id,
                registry=RegistrySettings(silence_timeout_s=1.0, hello_timeout_s=2.0),
                sweep_interval_s=0.1,
                replica=ReplicaConfig(lease_ttl_s=lease_ttl_s),
            ),
            store=EtcdStore(fast_etcd_config(self.etcd.endpoint, PREFIX)),
        )
        await router.start()
        self.routers.append(router)
        return router

    async def scripted(
        self, router: Router, worker_id: str, instance_uid: str | None = None
    ) -> ScriptedWorker:
        worker = ScriptedWorker(router.address, worker_id, status(), answer_encode(worker_id))
        if instance_uid is not None:
            worker.instance_uid = instance_uid
        await worker.start()
        self.workers.append(worker)
        return worker

    async def agent(self, worker_id: str, **config: object) -> WorkerAgent:
        agent = WorkerAgent(
            AgentConfig(worker_id=worker_id, link=FAST_LINK, **config),  # type: ignore[arg-type]
            FakeBackend(),
            load_catalog(),
            resolver=_no_dns,
        )
        await agent.start()
        self.agents.append(agent)
        return agent

    async def close(self) -> None:
        for agent in self.agents:
            await agent.stop()
        for worker in self.workers:
            await worker.stop()
        for router in self.routers:
            await router.stop(grace_s=0.2)
            assert not router.replica.leadership.is_leader


async def _no_dns(host: str, port: int) -> list[str]:
    raise OSError("no DNS in this test")


@pytest.fixture
async def replicas(etcd: EtcdProcess) -> AsyncIterator[Replicas]:  # noqa: F811 - the imported fixture
    started = Replicas(etcd)
    yield started
    await started.close()


@pytest.fixture
async def store(etcd: EtcdProcess) -> AsyncIterator[EtcdStore]:  # noqa: F811
    client = EtcdStore(fast_etcd_config(etcd.endpoint, PREFIX))
    await client.start()
    yield client
    await client.close()


def live(router: Router) -> dict[str, str]:
    return {s.worker_id: s.instance_uid for s in router.registry if not s.closed}


async def record_of(store: EtcdStore, worker_id: str, router_id: str) -> WorkerRecord | None:
    kv = await store.get(worker_key(worker_id, router_id))
    return WorkerRecord.decode(kv.value) if kv is not None else None


async def test_a_worker_is_registered_while_its_stream_lasts(replicas, store, assert_eventually):
    router = await replicas.router("r1")
    worker = await replicas.scripted(router, "w1")

    async def registered():
        record = await record_of(store, "w1", "r1")
        assert record is not None and record.instance_uid == worker.instance_uid
        assert record.bundle == "default"

    await assert_eventually(registered, timeout_s=5)
    kv = await store.get(worker_key("w1", "r1"))
    assert kv is not None and kv.lease_id == router.replica.lease.keeper.lease_id

    await worker.disconnect()

    async def gone():
        assert await store.get(worker_key("w1", "r1")) is None

    await assert_eventually(gone, timeout_s=5)


async def test_a_restarted_worker_replaces_its_registration(replicas, store, assert_eventually):
    router = await replicas.router("r1")
    old = await replicas.scripted(router, "w1")
    await assert_eventually(lambda: live(router) == {"w1": old.instance_uid})
    new = await replicas.scripted(router, "w1")

    async def replaced():
        assert live(router) == {"w1": new.instance_uid}
        record = await record_of(store, "w1", "r1")
        assert record is not None and record.instance_uid == new.instance_uid

    await assert_eventually(replaced, timeout_s=5)
    # The replaced stream ending late must not take its successor's key with it.
    await old.disconnect()
    await assert_eventually(lambda: router.replica.membership.in_sync, timeout_s=5)
    record = await record_of(store, "w1", "r1")
    assert record is not None and record.instance_uid == new.instance_uid


async def test_a_fence_on_one_replica_ends_and_refuses_that_incarnation_on_every_replica(
    replicas, store, assert_eventually
):
    r1, r2 = await replicas.router("r1"), await replicas.router("r2")
    # One incarnation with a stream to each replica, silent towards r1 only
    # (as across a partition): only r1 sees the silence.
    to_r1 = await replicas.scripted(r1, "w1")
    to_r2 = await replicas.scripted(r2, "w1", instance_uid=to_r1.instance_uid)
    uid = to_r1.instance_uid
    await assert_eventually(lambda: live(r1) == {"w1": uid} and live(r2) == {"w1": uid})
    to_r1.send_status = False

    async def fenced_everywhere():
        assert to_r1.fences and to_r2.fences
        assert "w1" not in live(r1) and "w1" not in live(r2)
        assert await store.get(fence_key("w1", uid)) is not None

    await assert_eventually(fenced_everywhere, timeout_s=10)
    assert "another replica" in to_r2.fences[0].reason
    for router in (r1, r2):
        assert router.replica.membership.is_fenced("w1", uid)
        reply = await first_reply_to_hello(router.address, "w1", uid)
        assert reply.WhichOneof("kind") == "fence"
    # A new incarnation of the same worker is welcome everywhere.
    fresh = await replicas.scripted(r2, "w1")
    await assert_eventually(lambda: fresh.welcome is not None and live(r2) == {"w1": fresh.instance_uid})


async def test_singleton_loops_run_only_on_the_leader_and_move_with_leadership(
    replicas, store, assert_eventually
):
    r1 = await replicas.router("r1")
    await assert_eventually(lambda: r1.leadership.is_leader, timeout_s=10)
    r2 = await replicas.router("r2")
    runs: dict[str, int] = {"r1": 0, "r2": 0}
    running: set[str] = set()

    def singleton(router_id: str) -> Callable[[], object]:
        async def loop() -> None:
            runs[router_id] += 1
            running.add(router_id)
            try:
                await asyncio.Event().wait()  # until cancelled
            finally:
                running.discard(router_id)

        return loop

    # Registered after winning: starts at once on the leader, not at all elsewhere.
    r1.leadership.run_while_leader("gc", singleton("r1"))
    r2.leadership.run_while_leader("gc", singleton("r2"))
    await assert_eventually(lambda: running == {"r1"})
    assert not r2.leadership.is_leader
    assert await r2.leadership.current_leader() == "r1"

    # Writes guarded by the term succeed for the leader only.
    condition = r1.leadership.write_condition()
    assert (await store.txn([condition], [Put("pools/guarded", b"1")])).succeeded
    with pytest.raises(MeshError, match="not the leader"):
        r2.leadership.write_condition()

    # The leader drains: its loop stops, the other replica's starts, promptly.
    await r1.drain(grace_s=0.1)
    await assert_eventually(lambda: running == {"r2"} and r2.leadership.is_leader, timeout_s=5)
    assert not r1.leadership.is_leader
    assert runs == {"r1": 1, "r2": 1}
    # r1's old term no longer guards anything.
    assert not (await store.txn([condition], [Delete("pools/guarded")])).succeeded


async def test_a_crashing_singleton_loop_is_restarted_while_leading(replicas, assert_eventually):
    router = await replicas.router("r1")
    attempts = 0

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError("boom")
        await asyncio.Event().wait()

    router.leadership.run_while_leader("flaky", flaky)
    await assert_eventually(lambda: attempts == 3, timeout_s=10)
    assert router.leadership.is_leader


async def test_an_agent_follows_the_replicas_registered_in_etcd(replicas, store, assert_eventually):
    r1 = await replicas.router("r1")
    agent = await replicas.agent("w1", etcd_url=replicas.etcd.client_url, etcd_prefix=PREFIX)
    await assert_eventually(lambda: "w1" in live(r1), timeout_s=10)

    r2 = await replicas.router("r2")
    await assert_eventually(lambda: live(r2) == {"w1": agent.instance_uid}, timeout_s=5)
    assert agent.router_addresses == {r1.address, r2.address}

    # A replica that drains leaves the set at once (its lease is revoked); the
    # agent does not redial it once its stream ends.
    await r2.drain(grace_s=0.1)
    await assert_eventually(lambda: agent.router_addresses == {r1.address}, timeout_s=5)
    replicas.routers.remove(r2)
    await r2.stop(grace_s=0.1)
    await assert_eventually(lambda: agent.connected_routers == 1, timeout_s=5)
    assert set(await read_routers(store)) == {"r1"}
    assert live(r1) == {"w1": agent.instance_uid}


async def test_a_router_that_leaves_the_set_keeps_a_working_stream(replicas, assert_eventually):
    router = await replicas.router("r1")
    port = router.port
    answers: dict[str, list[str]] = {"replicas": ["127.0.0.1"]}

    async def resolver(host: str, _port: int) -> list[str]:
        return answers[host]

    agent = WorkerAgent(
        AgentConfig(routers=(f"dns:///replicas:{port}",), worker_id="w1", link=FAST_LINK, dns_refresh_s=0.05),
        FakeBackend(),
        load_catalog(),
        resolver=resolver,
    )
    await agent.start()
    replicas.agents.append(agent)
    await assert_eventually(lambda: "w1" in live(router), timeout_s=10)

    # The name stops listing it (a DNS blip, a pod marked unready): the stream stays.
    answers["replicas"] = []
    await assert_eventually(lambda: agent.router_addresses == frozenset(), timeout_s=5)
    assert agent.connected_routers == 1 and "w1" in live(router)
    # Listed again: the same link carries on, no second stream.
    answers["replicas"] = ["127.0.0.1"]
    await assert_eventually(lambda: agent.router_addresses == {f"127.0.0.1:{port}"}, timeout_s=5)
    assert agent.connected_routers == 1
    assert len([s for s in router.registry if not s.closed]) == 1
