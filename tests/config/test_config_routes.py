"""The Config API's REST routes on the real facade app (aiohttp test server), over a real
router: in-process (`router.config_service`) and remote (`GrpcConfigClient` over mesh.v1.Config)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from http_facade import FacadeConfig, create_app
from http_facade.config_routes import CONFIG_ACCESS_BY_ROUTE, add_config_routes
from http_facade.routes import Access
from mesh.config_api import ConfigApi, GrpcConfigClient
from mesh.coordination import MemoryStore
from mesh.router import Router
from tests.config.config_docs import NEW_MODEL, model_yaml, profile, yaml_bomb
from tests.config.conftest import MeshUnderTest, connected

pytestmark = pytest.mark.timeout(30)

YAML = {"Content-Type": "application/yaml"}
READ_TOKEN = "reader-token"
ADMIN_TOKEN = "admin-token"

ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def facade(mesh: MeshUnderTest) -> AsyncIterator[ClientFactory]:
    """facade(router, mode, config) -> a TestClient on the facade app with the config routes."""
    clients: list[TestClient] = []
    remotes: list[GrpcConfigClient] = []

    async def make(
        router: Router, mode: str = "in_process", config: FacadeConfig | None = None
    ) -> TestClient:
        api: ConfigApi = router.config_service
        if mode == "remote":
            remote = GrpcConfigClient([router.address])
            await remote.start()
            remotes.append(remote)
            api = remote
        app = create_app(router.service, config or FacadeConfig())
        add_config_routes(app, api)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
    for remote in remotes:
        await remote.close()


@pytest.fixture(params=["in_process", "remote"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


async def error_of(reply) -> tuple[int, str]:
    """(status, code) of an error reply, checking the one envelope on the way."""
    body = await reply.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], dict), body
    assert body["detail"]["message"]
    code = body["detail"]["code"]
    assert reply.headers["X-SIE-Error-Code"] == code
    return reply.status, code


async def test_write_answers_201_then_200_with_exactly_the_reference_fields(
    mesh, facade, mode, assert_eventually
):
    router = await mesh.router("r1")
    await mesh.worker("w1", [router])
    await assert_eventually(connected(router, "w1"))
    client = await facade(router, mode)

    created = await client.post("/v1/configs/models", data=model_yaml(), headers=YAML)
    assert created.status == 201
    body = await created.json()
    assert body == {
        "model_id": NEW_MODEL,
        "created_profiles": ["default"],
        "existing_profiles_skipped": [],
        "warnings": [],
        "routable_bundles_by_profile": {"default": ["default", "full"]},
        "worker_ack_pending": False,
        "eligible_bundles_count": 2,
        "eligible_bundles_with_workers_count": 1,
        "acked_workers": ["w1"],
        "total_eligible": 1,
        "pending_workers": [],
        "router_id": "r1",
    }
    again = await client.post("/v1/configs/models", data=model_yaml(), headers=YAML)
    assert again.status == 200
    assert (await again.json())["existing_profiles_skipped"] == ["default"]

    as_json = yaml.safe_load(model_yaml(profiles={"json": profile()}))
    from_json = await client.post("/v1/configs/models", json=as_json)
    assert from_json.status == 201 and (await from_json.json())["created_profiles"] == ["json"]


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (model_yaml(), {"Content-Type": "text/plain"}, (415, "UNSUPPORTED_MEDIA_TYPE")),
        (
            model_yaml(),
            {"Content-Type": "application/x-www-form-urlencoded"},
            (415, "UNSUPPORTED_MEDIA_TYPE"),
        ),
        ("sie_id: [broken", YAML, (400, "INVALID_INPUT")),
        ("{broken", {"Content-Type": "application/json"}, (400, "INVALID_INPUT")),
        (model_yaml(model_id="no spaces/allowed here"), YAML, (400, "INVALID_INPUT")),
        (yaml_bomb(), YAML, (400, "INVALID_INPUT")),
        (b"\xff\xfe not utf-8", YAML, (400, "INVALID_INPUT")),
        (
            model_yaml(profiles={"default": profile(adapter="acme.nowhere:Adapter")}),
            YAML,
            (422, "CONFIG_INVALID"),
        ),
        ("sie_id: acme/no-profiles\n", YAML, (422, "CONFIG_INVALID")),
        ("x" * (1024 * 1024 + 1), YAML, (413, "PAYLOAD_TOO_LARGE")),
    ],
    ids=["text", "form", "yaml", "json", "model-id", "bomb", "utf8", "adapter", "missing", "too-large"],
)
async def test_bad_writes_get_their_status_and_the_error_envelope(
    mesh, facade, mode, body, headers, expected
):
    router = await mesh.router("r1")
    client = await facade(router, mode)
    reply = await client.post("/v1/configs/models", data=body, headers=headers)
    assert await error_of(reply) == expected
    assert router.config_epoch == 0


async def test_conflicts_are_409_and_an_unreachable_store_is_503(mesh, facade, mode):
    store = MemoryStore()
    router = await mesh.router("r1", store=store)
    client = await facade(router, mode)
    assert (await client.post("/v1/configs/models", data=model_yaml(), headers=YAML)).status == 201

    changed = model_yaml(profiles={"default": profile(max_batch_tokens=7)})
    assert await error_of(await client.post("/v1/configs/models", data=changed, headers=YAML)) == (
        409,
        "CONFIG_CONFLICT",
    )

    keyed = {**YAML, "Idempotency-Key": "once"}
    first = await client.post("/v1/configs/models", data=model_yaml(profiles={"k": profile()}), headers=keyed)
    replay = await client.post(
        "/v1/configs/models", data=model_yaml(profiles={"k": profile()}), headers=keyed
    )
    assert (first.status, replay.status) == (201, 201)
    assert await first.json() == await replay.json()
    other = await client.post("/v1/configs/models", data=model_yaml(profiles={"j": profile()}), headers=keyed)
    assert await error_of(other) == (409, "CONFIG_CONFLICT")

    store.set_reachable(False)
    unavailable = await client.post(
        "/v1/configs/models", data=model_yaml(profiles={"z": profile()}), headers=YAML
    )
    assert await error_of(unavailable) == (503, "STORE_UNAVAILABLE")
    assert "Retry-After" in unavailable.headers


async def test_reads(mesh, facade, mode):
    router = await mesh.router("r1")
    client = await facade(router, mode)
    await client.post("/v1/configs/models", data=model_yaml(), headers=YAML)
    # A model whose id ends in /status, to show the suffix is handled.
    await client.post("/v1/configs/models", data=model_yaml(model_id="acme/status"), headers=YAML)

    listing = await (await client.get("/v1/configs/models")).json()
    rows = {row["model_id"]: row for row in listing["models"]}
    assert rows[NEW_MODEL] == {"model_id": NEW_MODEL, "profiles": ["default"], "source": "api"}
    assert {row["source"] for row in listing["models"]} == {"api", "filesystem"}

    document = await client.get(f"/v1/configs/models/{NEW_MODEL}")
    assert document.status == 200 and document.content_type == "application/yaml"
    assert yaml.safe_load(await document.text())["sie_id"] == NEW_MODEL
    assert await error_of(await client.get("/v1/configs/models/acme/missing")) == (404, "MODEL_NOT_FOUND")

    status = await client.get(f"/v1/configs/models/{NEW_MODEL}/status")
    body = await status.json()
    assert body["model_id"] == NEW_MODEL and body["epoch"] == 2
    assert {bundle["bundle_id"] for bundle in body["bundles"]} == {"default", "full"}
    assert set(body["bundles"][0]) == {
        "bundle_id",
        "expected_bundle_config_hash",
        "acked_workers",
        "pending_workers",
    }
    # `acme/status` is a model: its plain GET is its YAML, its status has the suffix twice.
    named_status = await client.get("/v1/configs/models/acme/status")
    assert yaml.safe_load(await named_status.text())["sie_id"] == "acme/status"
    assert (await (await client.get("/v1/configs/models/acme/status/status")).json())[
        "model_id"
    ] == "acme/status"
    assert await error_of(await client.get("/v1/configs/models/acme/nothing/status")) == (
        404,
        "MODEL_NOT_FOUND",
    )

    bundles = (await (await client.get("/v1/configs/bundles")).json())["bundles"]
    assert [bundle["bundle_id"] for bundle in bundles] == ["gliner", "default", "full"]
    assert set(bundles[0]) == {"bundle_id", "priority", "adapter_count", "source", "connected_workers"}
    bundle = await client.get("/v1/configs/bundles/default")
    assert yaml.safe_load(await bundle.text())["adapters"] == ["sie_server.adapters.sentence_transformer"]
    assert await error_of(await client.get("/v1/configs/bundles/nope")) == (404, "NOT_FOUND")

    resolved = await client.post("/v1/configs/resolve", json={"model": NEW_MODEL.upper()})
    assert await resolved.json() == {
        "model": NEW_MODEL,
        "resolved_bundle": "default",
        "compatible_bundles": ["default", "full"],
        "profiles": ["default"],
    }
    assert await error_of(await client.post("/v1/configs/resolve", json={"model": 3})) == (
        400,
        "INVALID_INPUT",
    )
    assert await error_of(await client.post("/v1/configs/resolve", json={"model": "a/b"})) == (
        404,
        "MODEL_NOT_FOUND",
    )
    conflict = await client.post("/v1/configs/resolve", json={"model": f"gliner:/{NEW_MODEL}"})
    assert await error_of(conflict) == (409, "BUNDLE_CONFLICT")

    epoch = await (await client.get("/v1/configs/epoch")).json()
    assert epoch == {"epoch": 2, "bundles_hash": router.catalog.bundles_hash()}
    exported = await (await client.get("/v1/configs/export")).json()
    assert exported["epoch"] == 2 and set(exported) == {"epoch", "bundles", "models", "bundle_config_hashes"}


@pytest.mark.parametrize(
    ("method", "path", "token", "expected"),
    [
        ("POST", "/v1/configs/models", None, 401),
        ("POST", "/v1/configs/models", READ_TOKEN, 403),
        ("POST", "/v1/configs/models", "wrong", 403),
        ("POST", "/v1/configs/models", ADMIN_TOKEN, 201),
        ("GET", "/v1/configs/models", None, 401),
        ("GET", "/v1/configs/models", "wrong", 403),
        ("GET", "/v1/configs/models", READ_TOKEN, 200),
        ("GET", "/v1/configs/epoch", ADMIN_TOKEN, 200),
        ("POST", "/v1/configs/resolve", READ_TOKEN, 200),
    ],
)
async def test_writes_need_the_admin_token_and_reads_either_token(
    mesh, facade, method, path, token, expected
):
    router = await mesh.router("r1")
    client = await facade(router, config=FacadeConfig(auth_token=READ_TOKEN, admin_token=ADMIN_TOKEN))
    headers = dict(YAML)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = model_yaml()
    if path == "/v1/configs/resolve":
        body = json.dumps({"model": "sentence-transformers/all-MiniLM-L6-v2"})
        headers["Content-Type"] = "application/json"
    reply = await client.request(method, path, data=body if method == "POST" else None, headers=headers)
    assert reply.status == expected, await reply.text()
    if expected >= 400:
        assert (await error_of(reply))[1] == ("UNAUTHENTICATED" if expected == 401 else "PERMISSION_DENIED")
        assert router.catalog.model(NEW_MODEL) is None


async def test_with_only_the_auth_token_it_also_writes(mesh, facade):
    router = await mesh.router("r1")
    client = await facade(router, config=FacadeConfig(auth_token=READ_TOKEN))
    reply = await client.post(
        "/v1/configs/models", data=model_yaml(), headers={**YAML, "Authorization": f"Bearer {READ_TOKEN}"}
    )
    assert reply.status == 201


def test_the_write_route_is_marked_admin_for_the_auth_middleware():
    assert CONFIG_ACCESS_BY_ROUTE["config_add_model"] is Access.ADMIN
    assert {access for name, access in CONFIG_ACCESS_BY_ROUTE.items() if name != "config_add_model"} == {
        Access.READ
    }
