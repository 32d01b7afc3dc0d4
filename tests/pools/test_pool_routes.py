"""The /v1/pools REST routes on the real facade app, over both PoolsApi implementations:
the router's PoolService in-process, and GrpcPoolsClient -> mesh.v1.Pools -> PoolService."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from http_facade import FacadeConfig, create_app
from http_facade.pool_routes import add_pool_routes
from http_facade.testing import FakeMesh
from mesh.clock import SystemClock
from mesh.coordination import MemoryStore
from mesh.pools import (
    GrpcPoolsClient,
    PoolLimits,
    PoolService,
    PoolStore,
    add_pools_servicer,
    pool_spec_from_json,
)

pytestmark = pytest.mark.timeout(30)


class Backend:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.service = PoolService(PoolStore(self.store, SystemClock()), SystemClock(), limits=PoolLimits())


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    backend = Backend()
    await backend.store.start()
    yield backend
    await backend.store.close()


@pytest.fixture(params=["in-process", "grpc"])
async def pools_api(request, backend):
    if request.param == "in-process":
        yield backend.service
        return
    server = grpc.aio.server()
    add_pools_servicer(backend.service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with GrpcPoolsClient([f"127.0.0.1:{port}"], timeout_s=5.0) as client:
        yield client
    await server.stop(0)


async def start_client(pools_api, config: FacadeConfig | None = None) -> TestClient:
    app = create_app(FakeMesh(), config or FacadeConfig())
    add_pool_routes(app, pools_api)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(pools_api) -> AsyncIterator[TestClient]:
    client = await start_client(pools_api)
    yield client
    await client.close()


async def expect_error(response, status: int, code: str) -> dict:
    assert response.status == status, await response.text()
    assert response.headers["X-SIE-Error-Code"] == code
    body = await response.json()
    assert isinstance(body["detail"], dict), body  # the SDK's pool calls crash on a string detail
    assert body["detail"]["code"] == code and body["detail"]["message"]
    return body


async def test_create_get_list_renew_delete(client):
    response = await client.post("/v1/pools", json={"name": "Eval", "gpus": {"L4": 2}, "gpu_caps": {"l4": 3}})
    assert response.status == 201
    pool = await response.json()
    assert pool["name"] == "eval"
    assert pool["spec"] == {
        "name": "eval",
        "bundle": None,
        "gpus": {"l4": 2},
        "gpu_caps": {"l4": 3},
        "ttl_seconds": 1200,
        "minimum_worker_count": 0,
    }
    status = pool["status"]
    assert status["state"] == "pending" and status["assigned_workers"] == []
    assert status["created_at"] == status["last_renewed"] > 1.6e9

    again = await client.post("/v1/pools", json={"name": "eval", "gpus": {"l4": 2}, "gpu_caps": {"l4": 3}})
    assert again.status == 201  # the reference: same name again is a renewal, still 201
    assert (await again.json())["status"]["created_at"] == status["created_at"]

    got = await client.get("/v1/pools/EVAL")
    assert got.status == 200 and (await got.json())["spec"] == pool["spec"]

    listed = await client.get("/v1/pools")
    assert listed.status == 200 and [p["name"] for p in (await listed.json())["pools"]] == ["eval"]

    renewed = await client.post("/v1/pools/eval/renew")
    assert renewed.status == 200 and await renewed.json() == {"message": "Pool renewed"}

    deleted = await client.delete("/v1/pools/eval")
    assert deleted.status == 200
    await expect_error(await client.get("/v1/pools/eval"), 404, "POOL_NOT_FOUND")
    assert (await (await client.get("/v1/pools")).json()) == {"pools": []}


async def test_unknown_pools_are_404(client):
    await expect_error(await client.get("/v1/pools/nope"), 404, "POOL_NOT_FOUND")
    await expect_error(await client.post("/v1/pools/nope/renew"), 404, "POOL_NOT_FOUND")
    await expect_error(await client.delete("/v1/pools/nope"), 404, "POOL_NOT_FOUND")


async def test_default_is_protected(client):
    await expect_error(await client.delete("/v1/pools/default"), 403, "PERMISSION_DENIED")
    await expect_error(await client.post("/v1/pools", json={"name": "default"}), 403, "PERMISSION_DENIED")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"gpus": {"l4": 1}}, "name"),
        ({"name": "bad name"}, "name"),
        ({"name": "t", "gpus": {"l4": 0}}, "gpus.l4"),
        ({"name": "t", "ttl_seconds": 5}, "ttl_seconds"),  # below the service's bound, refused by it
        ({"name": "t", "gpus": {"l4": 2}, "gpu_caps": {"l4": 1}}, "gpu_caps.l4"),
    ],
)
async def test_invalid_specs_are_400(client, body, param):
    reply = await expect_error(await client.post("/v1/pools", json=body), 400, "INVALID_INPUT")
    assert reply["detail"].get("param", param) == param


async def test_bad_bodies(client):
    await expect_error(
        await client.post("/v1/pools", data=b"{", headers={"Content-Type": "application/json"}),
        400,
        "INVALID_INPUT",
    )
    await expect_error(
        await client.post("/v1/pools", data=b"x" * 70_000, headers={"Content-Type": "application/json"}),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    await expect_error(await client.get("/v1/pools/bad%20name"), 400, "INVALID_INPUT")


async def test_store_outage_is_a_retryable_503(client, backend):
    await client.post("/v1/pools", json={"name": "t"})
    backend.store.set_reachable(False)
    try:
        for response in (
            await client.post("/v1/pools", json={"name": "u"}),
            await client.post("/v1/pools/t/renew"),
            await client.get("/v1/pools/t"),
        ):
            await expect_error(response, 503, "STORE_UNAVAILABLE")
            assert int(response.headers["Retry-After"]) >= 1
    finally:
        backend.store.set_reachable(True)


async def test_pool_routes_sit_behind_the_facades_auth(pools_api):
    client = await start_client(pools_api, FacadeConfig(auth_token="secret"))
    try:
        await expect_error(await client.get("/v1/pools"), 401, "UNAUTHENTICATED")
        response = await client.post(
            "/v1/pools", json={"name": "t"}, headers={"Authorization": "Bearer secret"}
        )
        assert response.status == 201
    finally:
        await client.close()


async def test_pool_routes_are_in_the_openapi_document(client):
    document = await (await client.get("/openapi.json")).json()
    assert {"post", "get"} <= set(document["paths"]["/v1/pools"])
    assert {"get", "delete"} <= set(document["paths"]["/v1/pools/{name}"])
    assert "post" in document["paths"]["/v1/pools/{name}/renew"]


async def test_the_grpc_client_moves_on_from_a_replica_that_is_down(backend, free_port):
    server = grpc.aio.server()
    add_pools_servicer(backend.service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with GrpcPoolsClient([f"127.0.0.1:{free_port}", f"127.0.0.1:{port}"], timeout_s=5.0) as client:
            for name in ("a", "b", "c"):  # round robin: some calls start at the dead one
                assert (await client.create_pool(pool_spec_from_json({"name": name}))).created
            assert [pool.name for pool in await client.list_pools()] == ["a", "b", "c"]
    finally:
        await server.stop(0)
