"""Acceptance: the real sie-sdk, unchanged, against the facade (over a FakeMesh for now)."""

from __future__ import annotations

import threading
import time

import pytest

from http_facade import FacadeConfig
from http_facade.testing import (
    ENCODE_MODEL,
    EXTRACT_MODEL,
    SCORE_MODEL,
    FakeMesh,
    FakeWorker,
    fake_dense,
    fake_entities,
    fake_multivector,
    fake_score,
    fake_sparse,
)
from mesh.errors import ErrorCode, MeshError
from mesh.v1 import common_pb2

pytestmark = [pytest.mark.sdk, pytest.mark.timeout(300)]


def test_encode_single_returns_the_exact_vector_without_a_version_warning(sdk, facade):
    out = sdk(facade.base_url, "encode_single", model=ENCODE_MODEL)
    assert out["dense"] == {"values": fake_dense("hello world"), "dtype": "float32", "shape": [8]}
    assert out["id"] == "d1"
    assert out["model"] == ENCODE_MODEL.lower()
    assert out["timing"] == {"total_ms": 2.0, "queue_ms": 0.5, "inference_ms": 1.5}
    assert out["request_id"] == facade.mesh.calls[-1].request_id
    assert out["warnings"] == []
    request = facade.mesh.calls[-1].request
    assert request.items[0].id == "d1" and request.items[0].text == "hello world"


def test_encode_batch_every_output_type_in_order(sdk, facade):
    texts = ["alpha beta", "gamma", "delta epsilon zeta"]
    out = sdk(
        facade.base_url,
        "encode_batch",
        model=ENCODE_MODEL,
        texts=texts,
        output_types=["dense", "sparse", "multivector"],
        is_query=True,
    )
    results = out["results"]
    assert [result["id"] for result in results] == ["d0", "d1", "d2"]
    for text, result in zip(texts, results):
        assert result["dense"]["values"] == fake_dense(text)
        indices, values = fake_sparse(text)
        assert result["sparse"]["indices"]["values"] == indices
        assert result["sparse"]["values"]["values"] == values
        assert result["multivector"]["values"] == fake_multivector(text)
        assert result["multivector"]["shape"] == [len(text.split()), 8]
    request = facade.mesh.calls[-1].request
    assert request.options.is_query is True
    assert list(request.output_types) == ["dense", "sparse", "multivector"]


def test_encode_float16(sdk, facade):
    out = sdk(facade.base_url, "encode_batch", model=ENCODE_MODEL, texts=["x y"], output_dtype="float16")
    assert out["results"][0]["dense"] == {"values": fake_dense("x y"), "dtype": "float16", "shape": [8]}
    assert facade.mesh.calls[-1].request.output_dtype == common_pb2.DTYPE_FLOAT16


def test_score(sdk, facade):
    texts = ["bread recipes", "a mesh routes requests", "what mesh"]
    out = sdk(facade.base_url, "score", model=SCORE_MODEL, query="what is a mesh", texts=texts)
    expected = sorted(
        ((f"item-{index}", fake_score("what is a mesh", text)) for index, text in enumerate(texts)),
        key=lambda pair: -pair[1],
    )
    assert out["query_id"] == "q"
    assert [(entry["item_id"], entry["rank"]) for entry in out["scores"]] == [
        (item_id, rank) for rank, (item_id, _) in enumerate(expected)
    ]
    assert [entry["score"] for entry in out["scores"]] == pytest.approx([score for _, score in expected])


def test_extract(sdk, facade):
    out = sdk(
        facade.base_url, "extract", model=EXTRACT_MODEL, texts=["Alice met Bob", "no one"], labels=["person"]
    )
    first, second = out["results"]
    assert first["entities"] == [
        {**entity, "bbox": None} for entity in fake_entities("Alice met Bob", ["person"])
    ]
    assert first["classifications"] == [{"label": "person", "score": 0.75}]
    assert second["entities"] == []


def test_list_and_get_models(sdk, facade):
    models = sdk(facade.base_url, "list_models")["models"]
    assert [model["name"] for model in models] == list(facade.mesh.models)
    assert models[0]["loaded"] is True
    one = sdk(facade.base_url, "get_model", model=ENCODE_MODEL)["model"]
    assert one["name"] == ENCODE_MODEL.lower()
    missing = sdk(facade.base_url, "get_model", model="nobody/none")
    assert (missing["error"], missing["status_code"], missing["code"]) == (
        "RequestError",
        404,
        "MODEL_NOT_FOUND",
    )


@pytest.mark.parametrize(("gpu", "target"), [("l4", ("l4", "")), ("tenant-abc/l4", ("l4", "tenant-abc"))])
def test_gpu_reaches_the_mesh_as_the_routing_target(sdk, facade, gpu, target):
    assert "dense" in sdk(facade.base_url, "encode_single", model=ENCODE_MODEL, gpu=gpu)
    request = facade.mesh.calls[-1].request
    assert (request.target.machine_profile, request.target.pool) == target


def test_provisioning_without_waiting_is_a_provisioning_error(sdk, facade):
    facade.mesh.provisioning_until = float("inf")
    out = sdk(facade.base_url, "encode_single", model=ENCODE_MODEL, gpu="l4", wait_for_capacity=False)
    assert out["error"] == "ProvisioningError"
    assert out["retry_after"] == 1.0


def test_encode_waits_for_capacity_that_appears_later(sdk, facade):
    facade.mesh.provisioning_until = time.monotonic() + 3.0
    started = time.monotonic()
    out = sdk(facade.base_url, "encode_single", model=ENCODE_MODEL, gpu="l4", provision_timeout_s=60)
    assert out["dense"]["values"] == fake_dense("hello world")
    assert time.monotonic() - started >= 2.5
    assert len(facade.mesh.calls) >= 3


def test_wait_for_capacity_polls_health_until_workers_appear(sdk, start_facade):
    mesh = FakeMesh(workers=[])
    facade = start_facade(mesh)
    stop = threading.Event()
    polls_before_join = 3

    def join_after_polls() -> None:
        # The fleet grows only once the client has polled /health and found
        # nothing several times: proof that it waited rather than raced.
        while not stop.wait(0.05):
            if mesh.health_reads >= polls_before_join:
                mesh.workers.append(FakeWorker("late", "l4", models=(ENCODE_MODEL.lower(),)))
                return

    joiner = threading.Thread(target=join_after_polls, daemon=True)
    joiner.start()
    try:
        out = sdk(facade.base_url, "wait_for_capacity", gpu="l4", timeout_s=60)
    finally:
        stop.set()
        joiner.join(timeout=5)
    assert out["capacity"]["worker_count"] == 1
    assert out["capacity"]["workers"][0]["name"] == "late"
    assert mesh.health_reads > polls_before_join


def test_wait_for_capacity_with_a_warmup_model(sdk, facade):
    facade.mesh.provisioning_until = time.monotonic() + 2.0
    out = sdk(facade.base_url, "wait_for_capacity", gpu="l4", model=ENCODE_MODEL, timeout_s=60)
    assert out["capacity"]["worker_count"] == 1
    assert facade.mesh.calls[-1].request.items[0].text == "warmup"


def test_pinned_pool_without_workers_fails_at_once_not_provisioning(sdk, facade):
    facade.mesh.provisioning_until = float("inf")
    started = time.monotonic()
    out = sdk(facade.base_url, "encode_single", model=ENCODE_MODEL, gpu="tenant-abc/l4")
    assert (out["error"], out["status_code"], out["code"]) == ("ServerError", 503, "POOL_UNAVAILABLE")
    assert time.monotonic() - started < 20


def test_retryable_errors_are_retried_by_the_sdk(sdk, facade):
    facade.mesh.errors = [
        MeshError(ErrorCode.QUEUE_FULL, "full"),
        MeshError(ErrorCode.LORA_LOADING, "loading"),
    ]
    out = sdk(facade.base_url, "encode_single", model=ENCODE_MODEL)
    assert out["dense"]["values"] == fake_dense("hello world")
    assert len(facade.mesh.calls) == 3


def test_model_load_failed_raises_at_once(sdk, facade):
    facade.mesh.error = MeshError(ErrorCode.MODEL_LOAD_FAILED, "gated repository")
    out = sdk(facade.base_url, "encode_single", model=ENCODE_MODEL)
    assert (out["error"], out["status_code"]) == ("ModelLoadFailedError", 502)
    assert len(facade.mesh.calls) == 1


def test_unknown_model(sdk, facade):
    out = sdk(facade.base_url, "encode_single", model="nobody/none")
    assert (out["error"], out["status_code"], out["code"]) == ("RequestError", 404, "MODEL_NOT_FOUND")


@pytest.mark.parametrize(
    ("api_key", "expected"),
    [
        ("secret", None),
        (None, ("RequestError", 401, "UNAUTHENTICATED")),
        ("wrong", ("RequestError", 403, "PERMISSION_DENIED")),
    ],
)
def test_api_key_auth(sdk, start_facade, api_key, expected):
    facade = start_facade(FakeMesh(), FacadeConfig(auth_token="secret"))
    out = sdk(facade.base_url, "encode_single", model=ENCODE_MODEL, api_key=api_key)
    if expected is None:
        assert out["dense"]["values"] == fake_dense("hello world")
    else:
        assert (out["error"], out["status_code"], out["code"]) == expected


# -- sie-sdk 0.6.4: the 202 provisioning era ------------------------------


def test_sdk_0_6_4_encode(sdk_0_6_4, facade):
    out = sdk_0_6_4(facade.base_url, "encode_single", model=ENCODE_MODEL)
    assert out["dense"] == {"values": fake_dense("hello world"), "dtype": "float32", "shape": [8]}


def test_sdk_0_6_4_waits_through_202_provisioning(sdk_0_6_4, facade):
    facade.mesh.provisioning_until = time.monotonic() + 2.5
    out = sdk_0_6_4(facade.base_url, "encode_single", model=ENCODE_MODEL, gpu="l4", provision_timeout_s=60)
    assert out["dense"]["values"] == fake_dense("hello world")
    assert len(facade.mesh.calls) >= 2


def test_sdk_0_6_4_provisioning_without_waiting(sdk_0_6_4, facade):
    facade.mesh.provisioning_until = float("inf")
    out = sdk_0_6_4(facade.base_url, "encode_single", model=ENCODE_MODEL, gpu="l4", wait_for_capacity=False)
    assert out["error"] == "ProvisioningError"
    assert out["retry_after"] == 1.0
