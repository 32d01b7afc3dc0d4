"""A small mesh for pool tests: router replicas sharing one store, and fake-backend worker agents.

Real etcd comes from tests/etcd's fixture (imported, not duplicated). Each
router is a real `Router` on 127.0.0.1:0 with its own store client (as
separate replicas would have); each worker is a real `WorkerAgent` with the
fake backend, dialling every replica.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from mesh.catalog import MINILM_MODEL_ID, load_catalog
from mesh.coordination import BackoffPolicy, CoordinationStore, EtcdStore
from mesh.errors import MeshError
from mesh.ha import ReplicaConfig
from mesh.pools import AssignerConfig, Pool, PoolLimits, PoolsConfig
from mesh.router import Router, RouterConfig
from mesh.services import RegistrySettings
from mesh.v1 import common_pb2, inference_pb2
from tests.etcd.conftest import etcd, fast_etcd_config  # noqa: F401 - the fixture, reused
from worker_agent import AgentConfig, FakeBackend, LinkSettings, ReconnectPolicy, WorkerAgent

MODEL = MINILM_MODEL_ID

FAST_LINK = LinkSettings(
    status_interval_s=0.1,
    connect_timeout_s=2.0,
    write_timeout_s=2.0,
    close_timeout_s=0.5,
    reconnect=ReconnectPolicy(initial_s=0.02, multiplier=2.0, max_s=0.2),
)

FAST_POOLS = PoolsConfig(
    limits=PoolLimits(min_ttl_s=1.0),
    assigner=AssignerConfig(
        resync_interval_s=0.5, min_pass_interval_s=0.02, expiry_grace_s=0.5, settle_s=0.3
    ),
)


def encode_request(pool: str = "", profile: str = "", text: str = "hello") -> inference_pb2.EncodeRequest:
    return inference_pb2.EncodeRequest(
        model=MODEL,
        items=[common_pb2.Item(id="x", text=text)],
        target=common_pb2.RoutingTarget(machine_profile=profile, pool=pool),
    )


@dataclass
class PoolMesh:
    """Routers and workers a test started; `close()` stops them all, workers first."""

    store_factory: object
    routers: list[Router] = field(default_factory=list)
    workers: dict[str, WorkerAgent] = field(default_factory=dict)

    async def start_router(self, router_id: str) -> Router:
        store: CoordinationStore = self.store_factory()  # type: ignore[operator]
        router = Router(
            RouterConfig(
                host="127.0.0.1",
                port=0,
                router_id=router_id,
                registry=RegistrySettings(silence_timeout_s=2.0, hello_timeout_s=2.0),
                sweep_interval_s=0.1,
                replica=ReplicaConfig(lease_ttl_s=2.0, retry=BackoffPolicy(initial_s=0.05, max_s=0.5)),
                pools=FAST_POOLS,
            ),
            store=store,
        )
        await router.start()
        self.routers.append(router)
        return router

    async def start_worker(
        self, worker_id: str, profile: str = "l4", *, pool: str = "", routers: list[Router] | None = None
    ) -> WorkerAgent:
        """A worker dialling `routers` (default: every live router)."""
        agent = WorkerAgent(
            AgentConfig(
                routers=tuple(router.address for router in (routers or self.live_routers())),
                worker_id=worker_id,
                bundle="default",
                machine_profile=profile,
                pool=pool,
                # Ready only once the models are loaded: no MODEL_LOADING answers in the tests.
                preload=True,
                link=FAST_LINK,
            ),
            FakeBackend(),
            load_catalog(),
        )
        await agent.start()
        self.workers[worker_id] = agent
        return agent

    async def stop_worker(self, worker_id: str) -> None:
        await self.workers.pop(worker_id).stop()

    def live_routers(self) -> list[Router]:
        return [router for router in self.routers if router.serving]

    def leader(self) -> Router:
        """Probe: the one live router that leads (AssertionError while there is none)."""
        leaders = [router for router in self.live_routers() if router.leadership.is_leader]
        assert len(leaders) == 1, [router.router_id for router in leaders]
        return leaders[0]

    def connected(self, *worker_ids: str):
        """Probe: every live router holds a healthy stream of each worker."""

        def probe() -> None:
            for router in self.live_routers():
                healthy = {view.worker_id for view in router.registry.snapshot() if view.healthy}
                assert set(worker_ids) <= healthy, (router.router_id, healthy)

        return probe

    def routed(self, expected: dict[str, str]):
        """Probe: on every live router, each worker routes as a member of the given pool ("" = shared)."""

        def probe() -> None:
            for router in self.live_routers():
                seen = {v.worker_id: v.pool for v in router.registry.snapshot() if v.worker_id in expected}
                assert seen == expected, (router.router_id, seen)

        return probe

    async def pool_on_every_router(self, name: str) -> Pool:
        """The pool as each live router answers; asserts they all agree."""
        views = [await router.pools.service.get_pool(name) for router in self.live_routers()]
        assert all(view == views[0] for view in views), views
        return views[0]

    async def close(self) -> None:
        for worker_id in list(self.workers):
            await self.stop_worker(worker_id)
        for router in self.routers:
            await router.stop(grace_s=0.2)


@pytest.fixture
async def etcd_mesh(etcd) -> AsyncIterator[PoolMesh]:  # noqa: F811 - the imported fixture
    prefix = f"/pools-{uuid.uuid4().hex[:8]}/"
    mesh = PoolMesh(lambda: EtcdStore(fast_etcd_config(etcd.endpoint, prefix)))
    yield mesh
    await mesh.close()


async def expect_mesh_error(call, code) -> MeshError:
    with pytest.raises(MeshError) as caught:
        await call
    assert caught.value.code is code, caught.value
    return caught.value
