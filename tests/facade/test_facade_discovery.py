"""The facade's clients follow the router set discovery reports: replicas appear, vanish and die.

Two real routers (`mesh.router.Router`) on 127.0.0.1 port 0, each with its
own scripted worker, marker bundle and marker pool, so every answer tells
which replica gave it. Discovery is the real `RouterDiscovery`; its resolver
is scripted -- one DNS name per router, answering that router's address or
nothing, as a headless Service does while its pod is ready or not -- except
in the cases that resolve `localhost` for real.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
import yaml

from http_facade import GrpcMeshClient, add_facade_arguments, router_discovery_config
from mesh.config_api import GrpcConfigClient
from mesh.errors import ErrorCode, MeshError
from mesh.ha import DiscoveryConfig, DnsName, RouterDiscovery
from mesh.pools import GrpcPoolsClient
from mesh.pools.spec import PoolSpec
from mesh.router import Router, RouterConfig
from mesh.services import RegistrySettings
from mesh.v1 import common_pb2, inference_pb2, registry_pb2
from tests.system.processes import ProcessGroup
from tests.wire.scripted_worker import ScriptedWorker, answer_encode, status

pytestmark = pytest.mark.timeout(30)

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ADAPTER = "sie_server.adapters.sentence_transformer"
DNS_REFRESH_S = 0.02
ENCODE = inference_pb2.EncodeRequest(model=MODEL, items=[common_pb2.Item(id="a", text="hi")])


@dataclass
class RouterUnderTest:
    """A router, its one worker, and a gate: the worker answers encode only while it is set."""

    router: Router
    worker: ScriptedWorker
    gate: asyncio.Event

    @property
    def router_id(self) -> str:
        return self.router.router_id

    @property
    def address(self) -> str:
        return self.router.address

    @property
    def dns_name(self) -> DnsName:
        return DnsName(self.router_id, self.router.port)


async def start_router(router_id: str, tmp_path, assert_eventually) -> RouterUnderTest:
    bundles = tmp_path / router_id
    bundles.mkdir()
    (bundles / f"{router_id}.yaml").write_text(yaml.safe_dump({"name": router_id, "adapters": [ADAPTER]}))
    router = Router(
        RouterConfig(
            host="127.0.0.1",
            port=0,
            router_id=router_id,
            bundles_dir=bundles,
            registry=RegistrySettings(silence_timeout_s=1.0, hello_timeout_s=2.0),
            sweep_interval_s=0.1,
        )
    )
    await router.start()
    await router.pools.service.create_pool(PoolSpec(name=f"pool-{router_id}"))
    gate = asyncio.Event()
    gate.set()
    answer = answer_encode(f"w-{router_id}")

    async def answer_when_open(task: registry_pb2.Task) -> registry_pb2.TaskResult:
        await gate.wait()
        return await answer(task)

    worker = ScriptedWorker(router.address, f"w-{router_id}", status(), answer_when_open)
    await worker.start()
    await assert_eventually(lambda: any(view.healthy for view in router.registry.snapshot()))
    return RouterUnderTest(router, worker, gate)


class ScriptedDns:
    """A resolver whose answers the test sets; a name with no answer resolves to no address."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}

    async def __call__(self, host: str, port: int) -> list[str]:
        return list(self.answers.get(host, []))


@dataclass
class Fleet:
    ra: RouterUnderTest
    rb: RouterUnderTest
    dns: ScriptedDns
    discovery: RouterDiscovery

    def resolve(self, *routers: RouterUnderTest) -> None:
        """From the next DNS refresh on, exactly these routers' names resolve (to 127.0.0.1)."""
        self.dns.answers = {router.router_id: ["127.0.0.1"] for router in routers}


@pytest.fixture
async def fleet(tmp_path, assert_eventually) -> AsyncIterator[Fleet]:
    started: list[RouterUnderTest] = []
    try:
        for router_id in ("ra", "rb"):
            started.append(await start_router(router_id, tmp_path, assert_eventually))
        ra, rb = started
        dns = ScriptedDns()
        config = DiscoveryConfig(dns=(ra.dns_name, rb.dns_name), dns_refresh_s=DNS_REFRESH_S)
        async with RouterDiscovery(config, resolver=dns) as discovery:
            yield Fleet(ra, rb, dns, discovery)
    finally:
        for router in started:
            await router.worker.stop()
            await router.router.stop(grace_s=0.2)


async def routers_answering(mesh: GrpcMeshClient, calls: int = 4) -> set[str]:
    return {(await mesh.cluster_health()).router_id for _ in range(calls)}


async def test_every_subscriber_hears_every_change_until_it_unsubscribes(assert_eventually):
    dns = ScriptedDns()
    config = DiscoveryConfig(static=("s:1",), dns=(DnsName("routers", 7),), dns_refresh_s=DNS_REFRESH_S)
    discovery = RouterDiscovery(config, resolver=dns)
    first: list[frozenset[str]] = []
    second: list[frozenset[str]] = []
    discovery.subscribe(first.append)
    stop_second = discovery.subscribe(second.append)
    async with discovery:
        dns.answers = {"routers": ["10.0.0.1"]}
        await assert_eventually(lambda: discovery.current == {"s:1", "10.0.0.1:7"})
        stop_second()
        dns.answers = {}
        await assert_eventually(lambda: discovery.current == {"s:1"})
        following = [task for task in asyncio.all_tasks() if task.get_name() == "router-discovery"]
        assert len(following) == 1
    assert first == [{"s:1", "10.0.0.1:7"}, {"s:1"}]
    assert second == [{"s:1", "10.0.0.1:7"}]
    # close() ended the task it owned.
    assert following[0].done()


async def test_a_replica_that_appears_is_used_and_one_that_vanishes_is_dropped(fleet, assert_eventually):
    ra, rb = fleet.ra, fleet.rb
    fleet.resolve(ra)
    async with GrpcMeshClient(fleet.discovery, health_interval_s=0.05) as mesh:
        await assert_eventually(mesh.ready)
        assert mesh.addresses == [ra.address]
        assert await routers_answering(mesh) == {"ra"}

        fleet.resolve(ra, rb)
        await assert_eventually(lambda: sorted(mesh.addresses) == sorted([ra.address, rb.address]))

        async def both_answer() -> None:
            assert await routers_answering(mesh) == {"ra", "rb"}

        await assert_eventually(both_answer)

        fleet.resolve(rb)
        await assert_eventually(lambda: mesh.addresses == [rb.address])
        assert await routers_answering(mesh, 6) == {"rb"}
        assert mesh.retiring == []


async def test_ready_follows_the_set_and_each_replicas_health(fleet, assert_eventually):
    ra, rb = fleet.ra, fleet.rb
    async with GrpcMeshClient(fleet.discovery, health_interval_s=0.05) as mesh:
        # Nothing resolves yet: no replica, not ready, and calls say so (retryable).
        assert mesh.addresses == [] and not mesh.ready()
        with pytest.raises(MeshError) as raised:
            await mesh.cluster_health()
        assert raised.value.code is ErrorCode.NOT_READY

        fleet.resolve(ra)
        await assert_eventually(mesh.ready)
        # In the set but draining (its health says NOT_SERVING): not ready.
        await ra.router.drain(grace_s=0.1)
        await assert_eventually(lambda: not mesh.ready())
        fleet.resolve(ra, rb)
        await assert_eventually(mesh.ready)
        fleet.resolve()
        await assert_eventually(lambda: mesh.addresses == [] and not mesh.ready())


async def test_requests_fail_over_when_a_discovered_replica_dies(fleet, assert_eventually):
    ra, rb = fleet.ra, fleet.rb
    fleet.resolve(ra, rb)
    # Health checks far apart: the dead replica is still believed ready when requests reach it.
    async with GrpcMeshClient(fleet.discovery, health_interval_s=60) as mesh:
        await assert_eventually(lambda: len(mesh.addresses) == 2)

        async def both_answer() -> None:
            assert await routers_answering(mesh) == {"ra", "rb"}

        await assert_eventually(both_answer)
        await ra.router.stop(grace_s=0)
        answered_by = [
            (await mesh.encode(ENCODE, timeout_s=5.0, request_id=f"r{i}")).worker_id for i in range(6)
        ]
        assert set(answered_by) == {"w-rb"}
        # DNS still lists it (a pod that died has not left the endpoints yet); failover covers the gap.
        assert ra.address in mesh.addresses and mesh.ready()


async def test_a_call_in_flight_on_a_replica_that_leaves_finishes_there(fleet, assert_eventually):
    ra, rb = fleet.ra, fleet.rb
    fleet.resolve(ra)
    async with GrpcMeshClient(fleet.discovery, health_interval_s=0.05) as mesh:
        await assert_eventually(mesh.ready)
        ra.gate.clear()
        in_flight = asyncio.create_task(mesh.encode(ENCODE, timeout_s=10.0, request_id="slow"))
        try:
            await assert_eventually(lambda: ra.worker.tasks)
            fleet.resolve(rb)
            await assert_eventually(lambda: mesh.addresses == [rb.address])
            # Retired, not closed: its channel still carries the call.
            assert mesh.retiring == [ra.address]
            await assert_eventually(mesh.ready)
            new = await mesh.encode(ENCODE, timeout_s=5.0, request_id="new")
            assert new.worker_id == "w-rb"
            assert not in_flight.done()
            ra.gate.set()
            assert (await asyncio.wait_for(in_flight, timeout=5.0)).worker_id == "w-ra"
            # Its last call ended: the channel is closed and the replica forgotten.
            assert mesh.retiring == []
        finally:
            in_flight.cancel()
            await asyncio.gather(in_flight, return_exceptions=True)


async def test_a_replica_back_before_its_last_call_ended_keeps_its_channel(fleet, assert_eventually):
    ra, rb = fleet.ra, fleet.rb
    fleet.resolve(ra)
    async with GrpcMeshClient(fleet.discovery, health_interval_s=0.05) as mesh:
        await assert_eventually(mesh.ready)
        ra.gate.clear()
        in_flight = asyncio.create_task(mesh.encode(ENCODE, timeout_s=10.0, request_id="slow"))
        try:
            await assert_eventually(lambda: ra.worker.tasks)
            fleet.resolve(rb)
            await assert_eventually(lambda: mesh.retiring == [ra.address])
            # A DNS blip: the pod is listed again while its call still runs.
            fleet.resolve(ra, rb)
            await assert_eventually(lambda: sorted(mesh.addresses) == sorted([ra.address, rb.address]))
            assert mesh.retiring == []

            async def both_answer() -> None:
                assert await routers_answering(mesh) == {"ra", "rb"}

            await assert_eventually(both_answer)
            ra.gate.set()
            assert (await asyncio.wait_for(in_flight, timeout=5.0)).worker_id == "w-ra"
            # Its call ended in the set: the channel stays open for the next ones.
            assert ra.address in mesh.addresses
            assert await routers_answering(mesh) == {"ra", "rb"}
        finally:
            in_flight.cancel()
            await asyncio.gather(in_flight, return_exceptions=True)


async def test_config_and_pools_clients_follow_the_same_discovery(fleet, assert_eventually):
    ra, rb = fleet.ra, fleet.rb
    fleet.resolve(ra)
    discovery = fleet.discovery
    async with (
        GrpcMeshClient(discovery, health_interval_s=0.05) as mesh,
        GrpcConfigClient(discovery) as config_api,
        GrpcPoolsClient(discovery, timeout_s=5.0) as pools_api,
    ):

        async def served_by() -> tuple[set[str], set[str], set[str]]:
            bundles = {bundle.bundle_id for bundle in await config_api.list_bundles()}
            pools = {pool.name for pool in await pools_api.list_pools()}
            return await routers_answering(mesh), bundles & {"ra", "rb"}, pools

        await assert_eventually(mesh.ready)
        assert await served_by() == ({"ra"}, {"ra"}, {"pool-ra"})
        fleet.resolve(rb)
        await assert_eventually(lambda: mesh.addresses == [rb.address])
        # Discovery tells every subscriber in the same step: all three moved together.
        assert await served_by() == ({"rb"}, {"rb"}, {"pool-rb"})
        assert not mesh.retiring


async def test_a_dns_name_resolved_for_real(fleet, assert_eventually):
    port = fleet.ra.router.port
    config = DiscoveryConfig(dns=(DnsName("localhost", port),), dns_refresh_s=0.5)
    async with (
        RouterDiscovery(config) as discovery,
        GrpcMeshClient(discovery, health_interval_s=0.05) as mesh,
    ):
        await assert_eventually(mesh.ready)
        # localhost may also resolve to ::1, where nothing listens: that replica is
        # simply never ready, and calls that try it fail over.
        assert f"127.0.0.1:{port}" in mesh.addresses
        assert set(mesh.addresses) <= {f"127.0.0.1:{port}", f"[::1]:{port}"}
        assert await routers_answering(mesh, 6) == {"ra"}


async def test_a_static_list_is_still_a_set_that_never_changes(fleet):
    async with GrpcMeshClient([fleet.ra.address, fleet.rb.address, fleet.ra.address]) as mesh:
        assert mesh.addresses == [fleet.ra.address, fleet.rb.address]
        assert mesh.ready()
        assert await routers_answering(mesh) == {"ra", "rb"}


# -- the command line --------------------------------------------------------------------


def facade_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mesh facade")
    add_facade_arguments(parser)
    return parser


@pytest.fixture
def no_etcd_env(monkeypatch) -> Iterator[None]:
    monkeypatch.delenv("MESH_ETCD_URL", raising=False)
    monkeypatch.delenv("MESH_ETCD_PREFIX", raising=False)
    yield


def test_router_specs_and_etcd_become_one_discovery_config(no_etcd_env):
    args = facade_parser().parse_args(
        ["--router", "r1:50051,dns:///router-headless:50051", "--dns-refresh-s", "2"]
    )
    config = router_discovery_config(args)
    assert config.static == ("r1:50051",)
    assert config.dns == (DnsName("router-headless", 50051),)
    assert (config.etcd_url, config.dns_refresh_s) == (None, 2.0)

    config = router_discovery_config(
        facade_parser().parse_args(["--etcd", "http://etcd:2379", "--etcd-prefix", "/m"])
    )
    assert (config.static, config.dns, config.etcd_url, config.etcd_prefix) == (
        (),
        (),
        "http://etcd:2379",
        "/m/",
    )


def test_etcd_from_the_environment_makes_router_optional(monkeypatch):
    monkeypatch.setenv("MESH_ETCD_URL", "http://etcd:2379")
    config = router_discovery_config(facade_parser().parse_args([]))
    assert config.etcd_url == "http://etcd:2379" and config.dynamic


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: --router"),
        (["--router", "dns:///router-headless"], "argument --router: 'dns:///router-headless' is not"),
        (
            ["--router", "dns://10.0.0.1/routers:1"],
            "argument --router: 'dns://10.0.0.1/routers:1': write DNS",
        ),
        (["--router", "dns:///a/b:1"], "argument --router:"),
        (["--router", "a:1,dns:///n:1,a:1"], "argument --router: router 'a:1' is listed twice"),
        (["--router", "fd00::1:50051"], "argument --router: 'fd00::1:50051' is not HOST:PORT"),
        (["--etcd", "etcd:2379"], "argument --etcd:"),
        (["--router", "a:1", "--dns-refresh-s", "0"], "argument --dns-refresh-s:"),
    ],
)
def test_bad_router_flags_are_argparse_errors_naming_the_flag(no_etcd_env, capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        facade_parser().parse_args(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


async def test_mesh_facade_over_a_dns_name_serves_and_stops_on_sigterm(
    fleet, free_port, tmp_path, assert_eventually
):
    """`mesh facade --router dns:///localhost:PORT` as its own process: ready, served, stopped."""
    group = ProcessGroup(tmp_path)
    facade = group.start(
        "facade",
        [
            "facade",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port),
            "--router",
            f"dns:///localhost:{fleet.ra.router.port}",
            "--dns-refresh-s",
            "0.2",
        ],
        env={"SIE_AUTH_TOKEN": "", "SIE_ADMIN_TOKEN": "", "MESH_ETCD_URL": ""},
    )
    base = f"http://127.0.0.1:{free_port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

            async def ready() -> None:
                assert facade.alive(), facade.log()
                try:
                    async with session.get(f"{base}/readyz") as reply:
                        assert reply.status == 200, await reply.text()
                except aiohttp.ClientConnectionError as error:
                    raise AssertionError(f"not listening yet: {error}") from None

            await assert_eventually(ready, timeout_s=20, interval_s=0.05)
            async with session.get(f"{base}/health") as reply:
                assert reply.status == 200
                assert (await reply.json())["router_id"] == "ra"
        facade.signal(signal.SIGTERM)
        assert await asyncio.wait_for(asyncio.to_thread(facade.process.wait), timeout=20) == 0, facade.log()
        assert "Traceback" not in facade.log()
    finally:
        await asyncio.to_thread(group.stop_all)


def test_mesh_facade_refuses_a_bad_spec_without_a_traceback(tmp_path):
    """The real command line: exit 2, the flag named, no traceback."""
    group = ProcessGroup(tmp_path)
    facade = group.start("facade", ["facade", "--router", "dns:///nowhere"], env={"MESH_ETCD_URL": ""})
    try:
        assert facade.process.wait(timeout=20) == 2
    finally:
        group.stop_all()
    log = facade.log()
    assert "argument --router" in log and "Traceback" not in log, log
