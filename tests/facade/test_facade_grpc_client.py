"""GrpcMeshClient against real grpc.aio servers on 127.0.0.1 port 0 serving a FakeMesh."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from aiohttp.test_utils import TestClient, TestServer
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from http_facade import GrpcMeshClient, create_app
from http_facade.grpc_client import INFERENCE_HEALTH_SERVICE, REQUEST_ID_METADATA_KEY
from http_facade.testing import ENCODE_MODEL, FakeMesh, fake_dense
from mesh.errors import ErrorCode, MeshError
from mesh.ha import parse_router_specs
from mesh.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2, inference_pb2, inference_pb2_grpc


class FakeRouter(inference_pb2_grpc.InferenceServicer, cluster_pb2_grpc.ClusterServicer):
    """The router's gRPC edge over a FakeMesh; records what each call carried."""

    def __init__(self, mesh: FakeMesh) -> None:
        self.mesh = mesh
        self.deadlines: list[float | None] = []
        self.request_ids: list[str] = []
        self.cancelled = asyncio.Event()

    async def _serve(self, call, request, context):
        self.deadlines.append(context.time_remaining())
        self.request_ids.append(dict(context.invocation_metadata()).get(REQUEST_ID_METADATA_KEY, ""))
        try:
            return await call(request, timeout_s=context.time_remaining(), request_id=self.request_ids[-1])
        except MeshError as error:
            await context.abort_with_status(error.to_grpc_status())
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def Encode(self, request, context):
        return await self._serve(self.mesh.encode, request, context)

    async def Score(self, request, context):
        return await self._serve(self.mesh.score, request, context)

    async def Extract(self, request, context):
        return await self._serve(self.mesh.extract, request, context)

    async def GetHealth(self, request, context):
        return cluster_pb2.GetHealthResponse(health=await self.mesh.cluster_health())

    async def ListModels(self, request, context):
        return await self.mesh.list_models()

    async def GetModel(self, request, context):
        try:
            return cluster_pb2.GetModelResponse(model=await self.mesh.get_model(request.model))
        except MeshError as error:
            await context.abort_with_status(error.to_grpc_status())

    async def GetPendingDemand(self, request, context):
        return cluster_pb2.GetPendingDemandResponse(demand=await self.mesh.pending_demand())


class RouterProcess:
    def __init__(
        self, server: grpc.aio.Server, router: FakeRouter, health: health.aio.HealthServicer, port: int
    ):
        self.server, self.router, self.health, self.port = server, router, health, port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


async def start_router(
    mesh: FakeMesh, *, health_service: str | None = INFERENCE_HEALTH_SERVICE
) -> RouterProcess:
    server = grpc.aio.server()
    router = FakeRouter(mesh)
    inference_pb2_grpc.add_InferenceServicer_to_server(router, server)
    cluster_pb2_grpc.add_ClusterServicer_to_server(router, server)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    if health_service is not None:
        await health_servicer.set(health_service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return RouterProcess(server, router, health_servicer, port)


@pytest.fixture
async def routers() -> AsyncIterator[list[RouterProcess]]:
    started = [await start_router(FakeMesh(worker_id="a")), await start_router(FakeMesh(worker_id="b"))]
    yield started
    for router in started:
        await router.server.stop(grace=None)


def _unused_address() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


ENCODE = inference_pb2.EncodeRequest(model=ENCODE_MODEL, items=[common_pb2.Item(text="hi")])


async def test_encode_passes_the_budget_as_timeout_and_the_request_id(routers):
    async with GrpcMeshClient([routers[0].address]) as mesh:
        assert mesh.ready()
        response = await mesh.encode(ENCODE, timeout_s=7.0, request_id="rid-1")
    assert list(response.items[0].dense.shape) == [8]
    router = routers[0].router
    assert 5.0 < router.deadlines[0] <= 7.1  # clocks differ by a hair
    assert router.request_ids == ["rid-1"]


async def test_cluster_reads(routers):
    async with GrpcMeshClient([routers[0].address]) as mesh:
        health_reply = await mesh.cluster_health()
        assert health_reply.workers[0].worker_id == "worker-0"
        models = await mesh.list_models()
        assert models.models[0].name == ENCODE_MODEL.lower()
        assert (await mesh.get_model(ENCODE_MODEL)).worker_count == 1
        with pytest.raises(MeshError) as missing:
            await mesh.get_model("no/such")
        assert missing.value.code is ErrorCode.MODEL_NOT_FOUND
        assert await mesh.pending_demand() == []


async def test_mesh_errors_come_back_with_code_and_retry_after(routers):
    routers[0].router.mesh.error = MeshError(ErrorCode.QUEUE_FULL, "full", retry_after_s=3.0)
    async with GrpcMeshClient([router.address for router in routers]) as mesh:
        with pytest.raises(MeshError) as raised:
            await mesh.encode(ENCODE, timeout_s=5.0, request_id="r")
    # A router's own answer is final even when it is UNAVAILABLE-shaped: no second replica.
    error = raised.value
    assert (error.code, error.message, error.effective_retry_after_s) == (ErrorCode.QUEUE_FULL, "full", 3.0)


async def test_provisioning_is_not_retried_on_another_replica(routers):
    for router in routers:
        router.router.mesh.provisioning_until = float("inf")
    async with GrpcMeshClient([router.address for router in routers]) as mesh:
        with pytest.raises(MeshError) as raised:
            await mesh.encode(ENCODE, timeout_s=5.0, request_id="r")
    assert raised.value.code is ErrorCode.PROVISIONING
    assert raised.value.machine_profile == "l4"
    assert len(routers[0].router.mesh.calls) + len(routers[1].router.mesh.calls) == 1


async def test_a_dead_replica_is_skipped(routers):
    async with GrpcMeshClient([_unused_address(), routers[1].address], health_interval_s=60) as mesh:
        assert mesh.ready()
        for _ in range(4):
            response = await mesh.encode(ENCODE, timeout_s=5.0, request_id="r")
            assert response.worker_id == "b"


async def test_failover_when_a_replica_stops_after_start(routers):
    async with GrpcMeshClient([router.address for router in routers], health_interval_s=60) as mesh:
        await routers[0].server.stop(grace=None)
        answered_by = {(await mesh.encode(ENCODE, timeout_s=5.0, request_id="r")).worker_id for _ in range(4)}
    assert answered_by == {"b"}


async def test_no_replica_reachable_is_not_ready(routers):
    async with GrpcMeshClient([_unused_address(), _unused_address()], health_interval_s=60) as mesh:
        assert not mesh.ready()
        with pytest.raises(MeshError) as raised:
            await mesh.encode(ENCODE, timeout_s=2.0, request_id="r")
    assert raised.value.code is ErrorCode.NOT_READY


async def test_readiness_follows_grpc_health(routers, assert_eventually):
    router = routers[0]
    async with GrpcMeshClient([router.address], health_interval_s=0.05) as mesh:
        assert mesh.ready()
        await router.health.set(INFERENCE_HEALTH_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        await assert_eventually(lambda: not mesh.ready())
        await router.health.set(INFERENCE_HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await assert_eventually(mesh.ready)


async def test_routers_without_per_service_health_fall_back_to_the_server_status():
    router = await start_router(FakeMesh(), health_service=None)
    try:
        async with GrpcMeshClient([router.address]) as mesh:
            assert mesh.ready()
    finally:
        await router.server.stop(grace=None)


async def test_deadline_from_the_router_maps_to_504_code(routers):
    routers[0].router.mesh.hang = True
    async with GrpcMeshClient([routers[0].address]) as mesh:
        with pytest.raises(MeshError) as raised:
            await mesh.encode(ENCODE, timeout_s=0.2, request_id="r")
    assert raised.value.code is ErrorCode.DEADLINE_EXCEEDED


async def test_cancelling_the_caller_cancels_the_rpc(routers):
    routers[0].router.mesh.hang = True
    async with GrpcMeshClient([routers[0].address]) as mesh:
        call = asyncio.create_task(mesh.encode(ENCODE, timeout_s=30.0, request_id="r"))
        while not routers[0].router.mesh.calls:
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(routers[0].router.cancelled.wait(), timeout=5)


async def test_facade_over_grpc_end_to_end(routers):
    async with (
        GrpcMeshClient([router.address for router in routers]) as mesh,
        TestClient(TestServer(create_app(mesh))) as client,
    ):
        reply = await client.post(
            f"/v1/encode/{ENCODE_MODEL}",
            json={"items": [{"text": "hi"}]},
            headers={"X-SIE-Request-Id": "e2e"},
        )
        assert reply.status == 200
        assert (await reply.json())["items"][0]["dense"]["values"] == fake_dense("hi")
        assert reply.headers["X-SIE-Worker"] in ("a", "b")
        assert (await client.get("/readyz")).status == 200
        assert (await client.get("/health")).status == 200
        missing = await client.post("/v1/encode/no/such", json={"items": [{"text": "hi"}]})
        assert missing.status == 404 and missing.headers["X-SIE-Error-Code"] == "MODEL_NOT_FOUND"
    assert "e2e" in routers[0].router.request_ids + routers[1].router.request_ids


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a:1", ("a:1",)),
        ("a:1, b:2", ("a:1", "b:2")),
        ("[::1]:50051", ("[::1]:50051",)),
        ("10.0.0.1:9,", ("10.0.0.1:9",)),
        ("dns:///router-headless:50051,a:1", ("dns:///router-headless:50051", "a:1")),
    ],
)
def test_router_specs_parse(text, expected):
    assert parse_router_specs(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", ",", "host", "host:", ":80", "host:0", "host:70000", "host:http", "::1:80", "[::1:80", "a:1,a:1"],
)
def test_bad_router_specs_are_refused(text):
    with pytest.raises(ValueError):
        parse_router_specs(text)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_FACADE_MAIN = """
import argparse, asyncio, logging, sys
from http_facade import add_facade_arguments, run_facade
logging.basicConfig(level=logging.INFO)
parser = argparse.ArgumentParser()
add_facade_arguments(parser)
sys.exit(asyncio.run(run_facade(parser.parse_args(sys.argv[1:]))))
"""


async def test_run_facade_serves_over_grpc_and_stops_on_sigterm(routers, assert_eventually):
    import os
    import signal
    import sys

    import aiohttp

    port = _free_port()
    env = {**os.environ, "SIE_AUTH_TOKEN": "cli-token", "PYTHONPATH": os.getcwd()}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _FACADE_MAIN,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--router",
        ",".join(router.address for router in routers),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                try:
                    async with session.get(f"{base}/readyz") as reply:
                        return reply.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await assert_eventually(ready, timeout_s=20)
            async with session.post(
                f"{base}/v1/encode/{ENCODE_MODEL}", json={"items": [{"text": "hi"}]}
            ) as reply:
                assert reply.status == 401  # the token came from SIE_AUTH_TOKEN
            async with session.post(
                f"{base}/v1/encode/{ENCODE_MODEL}",
                json={"items": [{"text": "hi"}]},
                headers={"Authorization": "Bearer cli-token"},
            ) as reply:
                assert reply.status == 200
                assert (await reply.json())["items"][0]["dense"]["values"] == fake_dense("hi")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
