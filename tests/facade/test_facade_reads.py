"""Probes, health, models, the cluster status stream, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
from aiohttp import web

from http_facade import FacadeConfig
from http_facade.app import STATE_KEY
from http_facade.openapi import openapi_path
from http_facade.routes import ROUTES
from http_facade.testing import ENCODE_MODEL, FakeMesh, FakeWorker
from mesh.errors import ErrorCode, MeshError
from mesh.v1 import cluster_pb2


async def test_healthz_is_200_even_when_the_mesh_is_not_ready(client, mesh):
    mesh.is_ready = False
    reply = await client.get("/healthz")
    assert reply.status == 200 and await reply.json() == {"status": "ok"}


async def test_readyz_follows_the_mesh_and_draining(client, mesh):
    assert (await client.get("/readyz")).status == 200
    mesh.is_ready = False
    reply = await client.get("/readyz")
    assert reply.status == 503 and reply.headers["X-SIE-Error-Code"] == "NOT_READY"
    mesh.is_ready = True
    client.server.app[STATE_KEY].draining = True
    assert (await client.get("/readyz")).status == 503


async def test_health_is_the_gateway_form(client, mesh):
    mesh.workers.append(FakeWorker("worker-1", "a100", models=(), healthy=False))
    body = await (await client.get("/health")).json()
    assert body["type"] == "gateway"
    assert body["status"] == "healthy"
    assert body["worker_count"] == 1
    assert body["configured_gpu_types"] == ["a100", "l4"]
    assert body["live_gpu_types"] == ["l4"]
    assert body["cluster"] == {"worker_count": 1, "gpu_count": 1, "models_loaded": 1, "total_qps": 0.0}
    worker = body["workers"][0]
    for key in (
        "name",
        "url",
        "gpu",
        "gpu_count",
        "loaded_models",
        "queue_depth",
        "healthy",
        "bundle",
        "bundle_config_hash",
        "memory_used_bytes",
        "memory_total_bytes",
    ):
        assert key in worker
    assert (worker["name"], worker["gpu"], worker["queue_depth"], worker["healthy"]) == (
        "worker-0",
        "l4",
        2,
        True,
    )
    assert worker["loaded_models"] == [ENCODE_MODEL.lower()]
    assert body["workers"][1]["healthy"] is False
    assert {model["name"] for model in body["models"]} == set(mesh.models)
    assert set(body["models"][0]) == {"name", "state", "worker_count", "gpu_types", "total_queue_depth"}


async def test_health_when_the_mesh_cannot_answer(client, mesh):
    async def unavailable():
        raise MeshError(ErrorCode.NOT_READY, "no router reachable")

    mesh.cluster_health = unavailable
    reply = await client.get("/health")
    assert reply.status == 503 and reply.headers["X-SIE-Error-Code"] == "NOT_READY"


async def test_models(client, mesh):
    body = await (await client.get("/v1/models")).json()
    names = [model["name"] for model in body["models"]]
    assert names == list(mesh.models)
    first = body["models"][0]
    assert first["loaded"] is True and first["state"] == "loaded" and first["workers"] == ["worker-0"]
    one = await (await client.get(f"/v1/models/{ENCODE_MODEL}")).json()
    assert one == first
    missing = await client.get("/v1/models/org/none")
    assert missing.status == 404 and (await missing.json())["detail"]["code"] == "MODEL_NOT_FOUND"


async def test_cluster_status_sends_a_json_frame_per_interval(make_client):
    mesh = FakeMesh()
    client = await make_client(mesh, FacadeConfig(cluster_status_interval_s=0.05))
    async with client.ws_connect("/ws/cluster-status") as socket:
        frames = []
        for _ in range(3):
            message = await socket.receive(timeout=5)
            assert message.type == aiohttp.WSMsgType.TEXT
            frames.append(json.loads(message.data))
    assert all(set(frame) == {"timestamp", "cluster", "workers", "models"} for frame in frames)
    assert frames[0]["timestamp"] == 1_700_000_000.0
    assert frames[0]["cluster"]["worker_count"] == 1
    assert frames[0]["workers"][0]["name"] == "worker-0"


async def test_cluster_status_survives_a_mesh_hiccup(make_client):
    mesh = FakeMesh()
    failures = [MeshError(ErrorCode.NOT_READY, "blip")]
    original = mesh.cluster_health

    async def flaky():
        if failures:
            raise failures.pop()
        return await original()

    mesh.cluster_health = flaky
    client = await make_client(mesh, FacadeConfig(cluster_status_interval_s=0.05))
    async with client.ws_connect("/ws/cluster-status") as socket:
        message = await socket.receive(timeout=5)
        assert json.loads(message.data)["cluster"]["worker_count"] == 1


async def test_cluster_status_without_upgrade_is_a_400(client):
    reply = await client.get("/ws/cluster-status")
    assert reply.status == 400 and reply.headers["X-SIE-Error-Code"] == "INVALID_INPUT"


async def test_shutdown_closes_open_status_sockets(make_client):
    client = await make_client(FakeMesh(), FacadeConfig(cluster_status_interval_s=0.05))
    socket = await client.ws_connect("/ws/cluster-status")
    await socket.receive(timeout=5)
    await asyncio.wait_for(client.server.close(), timeout=5)
    message = await socket.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    await socket.close()


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


async def test_metrics_use_the_seed_names(client, mesh):
    mesh.pending.append(cluster_pb2.PendingDemand(machine_profile="h100", bundle="default", requests=3))
    await client.post(
        f"/v1/encode/{ENCODE_MODEL}", json={"items": [{"text": "x"}]}, headers={"X-SIE-MACHINE-PROFILE": "l4"}
    )
    await client.post(f"/v1/encode/{ENCODE_MODEL}", json={"items": []})
    mesh.provisioning_until = float("inf")
    await client.post(
        f"/v1/encode/{ENCODE_MODEL}",
        json={"items": [{"text": "x"}]},
        headers={"X-SIE-MACHINE-PROFILE": "h100"},
    )

    reply = await client.get("/metrics")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
    text = await reply.text()
    assert (
        _sample(text, "sie_gateway_requests_total", endpoint="encode", status="200", machine_profile="l4")
        == 1
    )
    assert _sample(text, "sie_gateway_requests_total", endpoint="encode", status="400") == 1
    assert (
        _sample(text, "sie_gateway_requests_total", endpoint="encode", status="202", machine_profile="h100")
        == 1
    )
    assert _sample(text, "sie_gateway_request_latency_seconds_count", endpoint="encode") == 3
    assert _sample(text, "sie_gateway_provisioning_responses_total", machine_profile="h100") == 1
    assert _sample(text, "sie_gateway_rejected_requests_total", reason="invalid_input") == 1
    assert _sample(text, "sie_gateway_workers", status="healthy") == 1
    assert (
        _sample(
            text, "sie_gateway_worker_queue_depth", worker="worker-0", machine_profile="l4", bundle="default"
        )
        == 2
    )
    assert _sample(text, "sie_gateway_pending_demand", machine_profile="h100", bundle="default") == 3
    assert _sample(text, "sie_gateway_config_epoch") == 0
    assert _sample(text, "sie_gateway_store_connected") == 1


async def test_metrics_follow_config_epoch_and_store_connection(client, mesh):
    mesh.config_epoch = 7
    mesh.store_connected = False
    text = await (await client.get("/metrics")).text()
    assert _sample(text, "sie_gateway_config_epoch") == 7
    assert _sample(text, "sie_gateway_store_connected") == 0
    assert _sample(text, "sie_gateway_config_bootstrap_degraded") == 0


async def test_metrics_show_the_routers_config_and_pool_counters(client, mesh):
    mesh.config_deltas = {("write", "applied"): 3, ("model", "rejected"): 1}
    mesh.pool_events = {"created": 2, "expired": 1}
    text = await (await client.get("/metrics")).text()
    assert _sample(text, "sie_gateway_config_deltas_total", kind="write", result="applied") == 3
    assert _sample(text, "sie_gateway_config_deltas_total", kind="model", result="rejected") == 1
    assert _sample(text, "sie_gateway_pool_events_total", event="created") == 2
    assert _sample(text, "sie_gateway_pool_events_total", event="expired") == 1


async def test_metrics_registries_are_per_app(make_client):
    first = await make_client(FakeMesh())
    second = await make_client(FakeMesh())
    await first.post(f"/v1/encode/{ENCODE_MODEL}", json={"items": [{"text": "x"}]})
    text = await (await second.get("/metrics")).text()
    assert 'endpoint="encode"' not in text


async def test_client_chosen_profiles_cannot_grow_metrics_without_bound(client):
    for index in range(80):
        await client.post(
            f"/v1/encode/{ENCODE_MODEL}",
            json={"items": [{"text": "x"}]},
            headers={"X-SIE-MACHINE-PROFILE": f"p{index}"},
        )
    text = await (await client.get("/metrics")).text()
    profiles = set(re.findall(r'sie_gateway_requests_total\{[^}]*machine_profile="([^"]*)"', text))
    assert len(profiles) <= 65 and "other" in profiles


# -- OpenAPI <-> route table -----------------------------------------------


def _registered(app: web.Application) -> set[tuple[str, str]]:
    pairs = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        pairs.add((route.method, openapi_path(path)))
    return pairs


async def test_openapi_document_matches_the_router(client):
    reply = await client.get("/openapi.json")
    assert reply.status == 200
    document = await reply.json()
    assert document["openapi"].startswith("3.")
    documented = {
        (method.upper(), path) for path, operations in document["paths"].items() for method in operations
    }
    assert documented == _registered(client.server.app)
    assert documented == {(route.method, openapi_path(route.path)) for route in ROUTES}
    operation_ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert sorted(operation_ids) == sorted(route.name for route in ROUTES)


def test_openapi_references_resolve():
    from http_facade.openapi import build_openapi

    document = build_openapi()
    text = json.dumps(document)
    for reference in set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)):
        assert reference in document["components"]["schemas"], reference


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
async def test_every_route_answers_without_a_server_error(client, route):
    path = route.path.replace("{model:.+}", ENCODE_MODEL)
    reply = await client.request(
        route.method, path, json={"items": [{"text": "x"}]} if route.method == "POST" else None
    )
    assert reply.status < 500
