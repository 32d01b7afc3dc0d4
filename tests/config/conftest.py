"""Config API tests: real routers on 127.0.0.1:0, real worker agents with the fake
backend, the real etcd fixture of tests/etcd (imported, not copied)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from mesh.catalog import Catalog, load_catalog
from mesh.config_api import ConfigServiceConfig, ConfigStore
from mesh.coordination import CoordinationStore
from mesh.router import Router, RouterConfig
from mesh.services import RegistrySettings
from tests.etcd.conftest import EtcdProcess, etcd, fast_etcd_config  # noqa: F401 - the etcd fixture, reused
from worker_agent import AgentConfig, FakeBackend, LinkSettings, ReconnectPolicy, WorkerAgent

FAST_LINK = LinkSettings(
    connect_timeout_s=2.0,
    write_timeout_s=2.0,
    close_timeout_s=0.5,
    reconnect=ReconnectPolicy(initial_s=0.02, multiplier=2.0, max_s=0.2),
)

# Short enough that a test of a worker-less bundle does not wait 3 s.
TEST_SETTINGS = ConfigServiceConfig(
    ack_timeout_s=3.0, bootstrap_timeout_s=2.0, retry_initial_s=0.05, retry_max_s=0.2
)


@dataclass
class MeshUnderTest:
    """Routers and worker agents one test started; stopped (workers first) at teardown."""

    routers: list[Router] = field(default_factory=list)
    agents: list[WorkerAgent] = field(default_factory=list)

    async def router(
        self,
        router_id: str,
        *,
        store: CoordinationStore | None = None,
        config_store: ConfigStore | None = None,
        catalog: Catalog | None = None,
        settings: ConfigServiceConfig = TEST_SETTINGS,
        **config: object,
    ) -> Router:
        router = Router(
            RouterConfig(
                host="127.0.0.1",
                port=0,
                router_id=router_id,
                registry=RegistrySettings(silence_timeout_s=2.0, hello_timeout_s=2.0),
                sweep_interval_s=0.1,
                config_api=settings,
                **config,  # type: ignore[arg-type]
            ),
            catalog=catalog,
            store=store,
            config_store=config_store,
        )
        await router.start()
        self.routers.append(router)
        return router

    async def stop_router(self, router: Router) -> None:
        self.routers.remove(router)
        await router.stop(grace_s=0.2)

    async def worker(
        self,
        worker_id: str,
        routers: Sequence[Router],
        *,
        bundle: str = "default",
        catalog: Catalog | None = None,
        backend: FakeBackend | None = None,
    ) -> WorkerAgent:
        agent = WorkerAgent(
            AgentConfig(
                routers=tuple(router.address for router in routers),
                worker_id=worker_id,
                bundle=bundle,
                link=FAST_LINK,
            ),
            backend or FakeBackend(),
            catalog or load_catalog(),
        )
        await agent.start()
        self.agents.append(agent)
        return agent

    async def close(self) -> None:
        for agent in reversed(self.agents):
            await agent.stop()
            assert not agent._tasks, agent._tasks  # nothing the agent started outlives it
        for router in reversed(self.routers):
            await router.stop(grace_s=0.2)
            follower = router.config_service._follower
            assert follower is None, "the config follower outlived its router"


@pytest.fixture
async def mesh() -> AsyncIterator[MeshUnderTest]:
    started = MeshUnderTest()
    yield started
    await started.close()


def connected(router: Router, *worker_ids: str):
    """A probe for assert_eventually: the workers hold a stream to the router."""

    def probe() -> None:
        live = {session.worker_id for session in router.registry if not session.closed}
        assert set(worker_ids) <= live, live

    return probe
