"""ConfigService in a real router (embedded store), with real worker agents on the fake backend."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from mesh.catalog import Catalog, load_catalog
from mesh.catalog.builtin import builtin_bundles
from mesh.config_api import AddModelReply, ConfigServiceConfig, DirectoryConfigStore
from mesh.coordination import MemoryStore
from mesh.errors import ERROR_TABLE, ErrorCode, MeshError
from mesh.v1 import common_pb2, inference_pb2
from tests.config.config_docs import (
    CROSS_ENCODER_ADAPTER,
    NEW_MODEL,
    VECTOR_DOCUMENT,
    VECTOR_HASH,
    model_yaml,
    profile,
)
from tests.config.conftest import TEST_SETTINGS, MeshUnderTest, connected
from tests.wire.scripted_worker import ScriptedWorker, answer_encode, status

pytestmark = pytest.mark.timeout(30)

REPLY_FIELDS = {
    "model_id",
    "created_profiles",
    "existing_profiles_skipped",
    "warnings",
    "routable_bundles_by_profile",
    "worker_ack_pending",
    "eligible_bundles_count",
    "eligible_bundles_with_workers_count",
    "acked_workers",
    "total_eligible",
    "pending_workers",
    "router_id",
}


async def failure(call) -> MeshError:
    with pytest.raises(MeshError) as caught:
        await call
    return caught.value


def http_status(error: MeshError) -> int:
    return ERROR_TABLE[error.code].http_status


# -- writes: every answer ------------------------------------------------------------------


async def test_a_new_model_is_created_and_acknowledged_by_the_bundles_worker(
    mesh: MeshUnderTest, assert_eventually
):
    router = await mesh.router("r1")
    agent = await mesh.worker("w1", [router])
    await assert_eventually(connected(router, "w1"))

    reply = await router.config_service.add_model_config(model_yaml(), idempotency_key="")

    assert reply.http_status == 201
    assert set(reply.to_json()) == REPLY_FIELDS
    assert reply.model_id == NEW_MODEL
    assert reply.created_profiles == ("default",)
    assert reply.routable_bundles_by_profile == {"default": ("default", "full")}
    assert (reply.eligible_bundles_count, reply.eligible_bundles_with_workers_count) == (2, 1)
    assert reply.acked_workers == ("w1",) and reply.pending_workers == () and not reply.worker_ack_pending
    assert reply.total_eligible == 1 and reply.router_id == "r1"
    assert router.config_epoch == 1 == reply.epoch
    assert agent.bundle_config_hash == router.catalog.bundle_config_hash("default")
    # Routable at once: the router's catalog resolves it.
    assert router.catalog.resolve(NEW_MODEL).resolved_bundle == "default"


async def test_posting_existing_profiles_again_is_200_and_bumps_nothing(mesh: MeshUnderTest):
    router = await mesh.router("r1")
    first = await router.config_service.add_model_config(model_yaml())
    again = await router.config_service.add_model_config(model_yaml())
    assert first.http_status == 201 and again.http_status == 200
    assert again.created_profiles == () and again.existing_profiles_skipped == ("default",)
    assert router.config_epoch == 1


async def test_appending_a_profile_keeps_the_first_one(mesh: MeshUnderTest):
    router = await mesh.router("r1")
    await router.config_service.add_model_config(model_yaml())
    reply = await router.config_service.add_model_config(
        model_yaml(profiles={"fast": profile(max_batch_tokens=1024)})
    )
    assert reply.created_profiles == ("fast",)
    assert set(router.catalog.model(NEW_MODEL).profiles) == {"default", "fast"}
    assert router.config_epoch == 2


@pytest.mark.parametrize(
    ("document", "code", "status_code"),
    [
        ("sie_id: [broken", ErrorCode.INVALID_INPUT, 400),
        (model_yaml(model_id="bad id/with space"), ErrorCode.INVALID_INPUT, 400),
        (model_yaml(model_id="../etc/passwd"), ErrorCode.INVALID_INPUT, 400),
        ("just a string", ErrorCode.INVALID_INPUT, 400),
        (
            model_yaml(profiles={"default": profile(adapter="acme.unknown:Adapter")}),
            ErrorCode.CONFIG_INVALID,
            422,
        ),
        ("sie_id: acme/no-profiles\n", ErrorCode.CONFIG_INVALID, 422),
        (
            model_yaml(profiles={"default": {"adapter_path": "sie_server.adapters.gliner:X"}}),
            ErrorCode.CONFIG_INVALID,
            422,
        ),
    ],
)
async def test_bad_documents_are_refused_with_their_status(mesh: MeshUnderTest, document, code, status_code):
    router = await mesh.router("r1")
    error = await failure(router.config_service.add_model_config(document))
    assert (error.code, http_status(error)) == (code, status_code)
    assert router.config_epoch == 0


async def test_a_conflicting_profile_is_409_and_changes_nothing(mesh: MeshUnderTest):
    router = await mesh.router("r1")
    await router.config_service.add_model_config(model_yaml())
    error = await failure(
        router.config_service.add_model_config(model_yaml(profiles={"default": profile(max_batch_tokens=99)}))
    )
    assert (error.code, http_status(error)) == (ErrorCode.CONFIG_CONFLICT, 409)
    assert router.catalog.model(NEW_MODEL).profiles["default"].max_batch_tokens == 4096
    assert router.config_epoch == 1


async def test_an_unreachable_store_is_503_and_the_model_is_not_added(mesh: MeshUnderTest):
    store = MemoryStore()
    router = await mesh.router("r1", store=store)
    store.set_reachable(False)
    error = await failure(router.config_service.add_model_config(model_yaml()))
    assert (error.code, http_status(error)) == (ErrorCode.STORE_UNAVAILABLE, 503)
    assert error.retryable
    assert router.catalog.model(NEW_MODEL) is None
    store.set_reachable(True)
    assert (await router.config_service.add_model_config(model_yaml())).http_status == 201


async def test_idempotency_key_replays_the_first_answer_and_refuses_another_body(mesh: MeshUnderTest):
    router = await mesh.router("r1")
    service = router.config_service
    first = await service.add_model_config(model_yaml(), idempotency_key="req-1")
    replay = await service.add_model_config(model_yaml(), idempotency_key="req-1")
    assert replay == first and replay.http_status == 201
    assert router.config_epoch == 1
    other = model_yaml(profiles={"other": profile()})
    error = await failure(service.add_model_config(other, idempotency_key="req-1"))
    assert (error.code, http_status(error)) == (ErrorCode.CONFIG_CONFLICT, 409)
    assert "Idempotency-Key" in error.message
    # Without the key the same body is an ordinary, idempotent write.
    assert (await service.add_model_config(model_yaml())).http_status == 200


async def test_concurrent_retries_with_one_key_write_once(mesh: MeshUnderTest):
    router = await mesh.router("r1")
    replies = await asyncio.gather(
        *(router.config_service.add_model_config(model_yaml(), idempotency_key="k") for _ in range(5))
    )
    assert {reply.http_status for reply in replies} == {201}
    assert router.config_epoch == 1


async def test_a_bundle_whose_worker_never_acks_is_reported_pending(mesh: MeshUnderTest, assert_eventually):
    router = await mesh.router("r1", settings=ConfigServiceConfig(ack_timeout_s=0.3))
    silent = ScriptedWorker(router.address, "silent", status(), answer_encode("silent"))
    await silent.start()
    try:
        await assert_eventually(connected(router, "silent"))
        reply = await router.config_service.add_model_config(model_yaml())
    finally:
        await silent.stop()
    assert reply.http_status == 201
    assert reply.worker_ack_pending
    assert reply.pending_workers == ("silent",) and reply.acked_workers == ()
    assert reply.eligible_bundles_with_workers_count == 1


async def test_a_write_with_no_eligible_worker_does_not_wait(mesh: MeshUnderTest):
    router = await mesh.router("r1", settings=ConfigServiceConfig(ack_timeout_s=10.0))
    reply = await asyncio.wait_for(router.config_service.add_model_config(model_yaml()), timeout=2.0)
    assert not reply.worker_ack_pending and reply.eligible_bundles_with_workers_count == 0


# -- workers ----------------------------------------------------------------------------------


async def test_the_reference_hash_vector_reaches_the_worker(mesh: MeshUnderTest, assert_eventually):
    # No models at all: bundle `default` hashes to "" until the API adds the
    # reference's test-vector model, then to the reference's hash.
    empty = Catalog(builtin_bundles(), [])
    router = await mesh.router("r1", catalog=empty)
    agent = await mesh.worker("w1", [router], catalog=Catalog(builtin_bundles(), []))
    await assert_eventually(connected(router, "w1"))
    assert agent.bundle_config_hash == ""

    reply = await router.config_service.add_model_config(VECTOR_DOCUMENT)

    assert reply.acked_workers == ("w1",)
    assert router.catalog.bundle_config_hash("default") == VECTOR_HASH
    assert agent.bundle_config_hash == VECTOR_HASH

    def reported() -> None:
        (session,) = list(router.registry)
        assert session.status.bundle_config_hash == VECTOR_HASH

    await assert_eventually(reported)
    status_view = await router.config_service.model_status(reply.model_id)
    default = next(bundle for bundle in status_view.bundles if bundle.bundle_id == "default")
    assert default.expected_bundle_config_hash == VECTOR_HASH and default.acked_workers == ("w1",)


async def test_a_worker_that_connects_later_gets_the_api_models_after_its_welcome(
    mesh: MeshUnderTest, assert_eventually
):
    router = await mesh.router("r1")
    await router.config_service.add_model_config(model_yaml())
    agent = await mesh.worker("late", [router])
    expected = router.catalog.bundle_config_hash("default")
    await assert_eventually(lambda: agent.bundle_config_hash == expected)
    assert agent.catalog.model(NEW_MODEL) is not None
    # The agent took the update as part of a healthy stream (an update before
    # the Welcome would have been a protocol violation ending it).
    await assert_eventually(connected(router, "late"))
    assert agent.connected_routers == 1


async def test_the_first_request_for_a_new_model_loads_it_then_it_is_served(
    mesh: MeshUnderTest, assert_eventually
):
    router = await mesh.router("r1")
    agent = await mesh.worker("w1", [router])
    await assert_eventually(connected(router, "w1"))
    await router.config_service.add_model_config(model_yaml())
    request = inference_pb2.EncodeRequest(model=NEW_MODEL, items=[common_pb2.Item(id="a", text="hello")])

    error = await failure(router.service.encode(request, timeout_s=5.0, request_id="first"))
    assert error.code is ErrorCode.MODEL_LOADING and error.retryable

    async def served():
        try:
            return await router.service.encode(request, timeout_s=5.0, request_id="again")
        except MeshError as retry:
            assert retry.code is ErrorCode.MODEL_LOADING
            raise AssertionError("still loading") from None

    response = await assert_eventually(served)
    assert response.worker_id == "w1" and [item.id for item in response.items] == ["a"]
    assert NEW_MODEL in agent.backend.loaded


# -- reads ----------------------------------------------------------------------------------------


async def test_reads_show_the_catalog_and_the_connected_workers(mesh: MeshUnderTest, assert_eventually):
    router = await mesh.router("r1")
    await mesh.worker("w1", [router])
    await assert_eventually(connected(router, "w1"))
    service = router.config_service
    await service.add_model_config(
        model_yaml(profiles={"default": profile(), "rerank": profile(CROSS_ENCODER_ADAPTER)})
    )

    listing = {model.model_id: model.to_json() for model in await service.list_models()}
    assert listing[NEW_MODEL] == {"model_id": NEW_MODEL, "profiles": ["default", "rerank"], "source": "api"}
    assert (
        listing["sentence-transformers/all-MiniLM-L6-v2"]["source"] == "filesystem"
    )  # built-ins are shipped files

    document = await service.get_model(NEW_MODEL.upper())
    assert yaml.safe_load(document.yaml)["sie_id"] == NEW_MODEL
    assert (await failure(service.get_model("acme/missing"))).code is ErrorCode.MODEL_NOT_FOUND

    bundles = {bundle.bundle_id: bundle.to_json() for bundle in await service.list_bundles()}
    assert bundles["default"] == {
        "bundle_id": "default",
        "priority": 100,
        "adapter_count": 1,
        "source": "filesystem",
        "connected_workers": 1,
    }
    assert bundles["full"]["connected_workers"] == 0
    assert yaml.safe_load((await service.get_bundle("FULL")).yaml)["name"] == "full"
    assert (await failure(service.get_bundle("nope"))).code is ErrorCode.NOT_FOUND

    resolved = await service.resolve(f"{NEW_MODEL}:rerank")
    assert resolved.to_json() == {
        "model": NEW_MODEL,
        "resolved_bundle": "full",
        "compatible_bundles": ["full"],
        "profiles": ["default", "rerank"],
    }
    conflict = await failure(service.resolve(f"gliner:/{NEW_MODEL}"))
    assert conflict.code is ErrorCode.BUNDLE_CONFLICT and conflict.compatible_bundles == ("default", "full")

    status_view = (await service.model_status(NEW_MODEL)).to_json()
    assert [bundle["bundle_id"] for bundle in status_view["bundles"]] == ["default", "full"]
    assert status_view["bundles"][0]["acked_workers"] == ["w1"]

    epoch = (await service.epoch()).to_json()
    assert epoch == {"epoch": 1, "bundles_hash": router.catalog.bundles_hash()}
    exported = (await service.export()).to_json()
    assert exported["epoch"] == 1
    assert NEW_MODEL in {model["sie_id"] for model in exported["models"]}
    json.dumps(exported)  # JSON-ready


# -- durability (SIE_CONFIG_STORE_DIR) and SIE_CONFIG_RESTORE -------------------------------------


async def test_directory_store_restores_api_models_after_a_restart(mesh: MeshUnderTest, tmp_path):
    first = await mesh.router("r1", config_store_dir=tmp_path)
    await first.config_service.add_model_config(model_yaml())
    await first.config_service.add_model_config(model_yaml(profiles={"fast": profile(max_batch_tokens=512)}))
    await mesh.stop_router(first)

    second = await mesh.router("r2", config_store_dir=tmp_path)
    assert set(second.catalog.model(NEW_MODEL).profiles) == {"default", "fast"}
    assert second.config_epoch == 2
    assert (await second.config_service.add_model_config(model_yaml())).http_status == 200
    await mesh.stop_router(second)

    skipped = await mesh.router("r3", config_store_dir=tmp_path, settings=ConfigServiceConfig(restore=False))
    assert skipped.catalog.model(NEW_MODEL) is None
    assert skipped.config_epoch == 2  # the epoch keeps counting from the store
    reply = await skipped.config_service.add_model_config(model_yaml(profiles={"third": profile()}))
    # The stored document merges back in with the new profile.
    assert reply.created_profiles == ("third",) and skipped.config_epoch == 3


async def test_directory_writes_are_atomic_files_readable_by_a_new_store(tmp_path):
    store = DirectoryConfigStore(tmp_path)
    await store.start()
    base = await store.read_for_write("Acme/Model")
    written = await store.compare_and_write(base, "Acme/Model", "sie_id: Acme/Model\n")
    assert written is not None and written.epoch == 1
    # A second writer that read before the first wrote loses the race.
    assert await store.compare_and_write(base, "acme/model", "sie_id: acme/model\n") is None
    snapshot = await DirectoryConfigStore(tmp_path).snapshot()
    assert [(model.model_id, model.epoch) for model in snapshot.models] == [("Acme/Model", 1)]
    assert not [path for path in tmp_path.rglob("*.tmp")]


async def test_an_unreachable_store_at_start_degrades_then_catches_up(mesh: MeshUnderTest, assert_eventually):
    store = MemoryStore()
    writer = await mesh.router("writer", store=store)
    await writer.config_service.add_model_config(model_yaml())
    store.set_reachable(False)
    # A second router on the same (now unreachable) store: starts degraded, within the bound.
    late = await mesh.router(
        "late", store=store, settings=ConfigServiceConfig(bootstrap_timeout_s=0.2, retry_max_s=0.1)
    )
    assert late.config_service.bootstrap_degraded and late.catalog.model(NEW_MODEL) is None
    store.set_reachable(True)
    await assert_eventually(lambda: late.catalog.model(NEW_MODEL) is not None)
    assert not late.config_service.bootstrap_degraded and late.config_epoch == 1


def test_settings_read_the_environment():
    assert ConfigServiceConfig.from_env({}).restore is True
    assert ConfigServiceConfig.from_env({"SIE_CONFIG_RESTORE": "False"}).restore is False
    with pytest.raises(ValueError, match="SIE_CONFIG_RESTORE"):
        ConfigServiceConfig.from_env({"SIE_CONFIG_RESTORE": "maybe"})
    assert TEST_SETTINGS.restore


def test_a_reply_round_trips_through_its_record():
    reply = AddModelReply(
        "a/b",
        ("x",),
        (),
        ("w",),
        {"x": ("default",)},
        False,
        1,
        1,
        ("w1",),
        1,
        (),
        "r1",
        unchanged=False,
        epoch=4,
    )
    assert AddModelReply.from_record(json.loads(json.dumps(reply.to_record()))) == reply
    assert load_catalog()  # the default catalog still loads with the package imported
