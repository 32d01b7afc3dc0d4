"""Every error the facade can answer: envelope, status from ERROR_TABLE, headers."""

from __future__ import annotations

import gzip
import json

import msgpack
import pytest

from http_facade import FacadeConfig
from http_facade.error_replies import understands_503_provisioning
from http_facade.testing import ENCODE_MODEL, EXTRACT_MODEL, SCORE_MODEL, FakeMesh
from mesh.errors import ERROR_TABLE, HTTP_ONLY_CODES, ErrorCode, MeshError
from mesh.v1 import common_pb2, inference_pb2

ENCODE = f"/v1/encode/{ENCODE_MODEL}"
SCORE = f"/v1/score/{SCORE_MODEL}"
EXTRACT = f"/v1/extract/{EXTRACT_MODEL}"
ONE_ITEM = {"items": [{"text": "x"}]}


async def assert_envelope(reply, status: int, code: str, field: str | None = None) -> dict:
    text = await reply.text()
    assert reply.status == status, text
    assert reply.headers["X-SIE-Error-Code"] == code
    assert reply.headers["Content-Type"] == "application/json"
    assert "Traceback" not in text
    body = json.loads(text)
    assert isinstance(body["detail"], dict)
    assert body["detail"]["code"] == code
    assert isinstance(body["detail"]["message"], str) and body["detail"]["message"]
    if field is not None:
        assert body["detail"]["param"] == field, body
        assert field in body["detail"]["message"]
    return body["detail"]


# -- errors the mesh raises ------------------------------------------------

_MESH_CODES = [
    code for code in ErrorCode if code not in HTTP_ONLY_CODES and code is not ErrorCode.PROVISIONING
]


@pytest.mark.parametrize("code", _MESH_CODES, ids=lambda code: code.value)
async def test_every_mesh_error_maps_through_the_one_table(client, mesh, code):
    mesh.error = MeshError(code, f"{code.value} happened")
    reply = await client.post(ENCODE, json=ONE_ITEM)
    spec = ERROR_TABLE[code]
    await assert_envelope(reply, spec.http_status, code.value)
    if spec.retryable and spec.retry_after_s > 0:
        assert reply.headers["Retry-After"] == str(int(spec.retry_after_s))
    else:
        assert "Retry-After" not in reply.headers


@pytest.mark.parametrize(
    ("code", "status", "retry_after"),
    [
        # The rows of the wire reference, spelled out.
        (ErrorCode.MODEL_NOT_FOUND, 404, None),
        (ErrorCode.BUNDLE_CONFLICT, 409, None),
        (ErrorCode.INVALID_INPUT, 400, None),
        (ErrorCode.MODEL_LOADING, 503, "2"),
        (ErrorCode.QUEUE_FULL, 503, "1"),
        (ErrorCode.RESOURCE_EXHAUSTED, 503, "5"),
        (ErrorCode.LORA_LOADING, 503, "1"),
        (ErrorCode.MODEL_LOAD_FAILED, 502, None),
        (ErrorCode.DEADLINE_EXCEEDED, 504, None),
        (ErrorCode.RATE_LIMIT, 429, "1"),
    ],
)
async def test_wire_reference_rows(client, mesh, code, status, retry_after):
    mesh.error = MeshError(code, "no")
    reply = await client.post(SCORE, json={"query": {"text": "q"}, "items": [{"text": "x"}]})
    await assert_envelope(reply, status, code.value)
    assert reply.headers.get("Retry-After") == retry_after


async def test_retry_after_override_rounds_up(client, mesh):
    mesh.error = MeshError(ErrorCode.QUEUE_FULL, "full", retry_after_s=2.2)
    reply = await client.post(ENCODE, json=ONE_ITEM)
    assert reply.headers["Retry-After"] == "3"


async def test_bundle_conflict_names_the_compatible_bundles(client, mesh):
    mesh.error = MeshError(
        ErrorCode.BUNDLE_CONFLICT, "bundle gpu-big cannot serve it", compatible_bundles=("default",)
    )
    detail = await assert_envelope(
        await client.post(f"/v1/encode/gpu-big:/{ENCODE_MODEL}", json=ONE_ITEM), 409, "BUNDLE_CONFLICT"
    )
    assert detail["compatible_bundles"] == ["default"]


async def test_unknown_model_is_404(client):
    await assert_envelope(
        await client.post("/v1/encode/nobody/knows-me", json=ONE_ITEM), 404, "MODEL_NOT_FOUND"
    )


async def test_unexpected_exception_is_a_500_envelope_without_traceback(client, mesh):
    class BrokenMesh(FakeMesh):
        async def encode(self, request, *, timeout_s, request_id):
            raise RuntimeError("secret internals")

    from aiohttp.test_utils import TestClient, TestServer

    from http_facade import create_app

    async with TestClient(TestServer(create_app(BrokenMesh()))) as broken:
        reply = await broken.post(ENCODE, json=ONE_ITEM)
        detail = await assert_envelope(reply, 500, "INTERNAL")
        assert "secret" not in detail["message"]
        assert reply.headers["X-SIE-Request-Id"] in detail["message"]


# -- provisioning ----------------------------------------------------------


@pytest.mark.parametrize(
    ("sdk_version", "modern"),
    [
        (None, False),
        ("", False),
        ("0.6.4", False),
        ("0.6.4.post1", False),
        ("0.5.9", False),
        ("0.6.5", True),
        ("0.6.10", True),
        ("0.10.1", True),
        ("1.0", True),
        ("unknown", True),
    ],
)
def test_which_clients_understand_503_provisioning(sdk_version, modern):
    assert understands_503_provisioning(sdk_version) is modern


async def test_provisioning_is_202_for_curl_and_old_sdks(client, mesh):
    mesh.provisioning_until = float("inf")
    for headers in ({}, {"X-SIE-SDK-Version": "0.6.4"}):
        reply = await client.post(ENCODE, json=ONE_ITEM, headers={"X-SIE-MACHINE-PROFILE": "l4", **headers})
        assert reply.status == 202
        assert reply.headers["Retry-After"] == "1"
        assert "X-SIE-Error-Code" not in reply.headers
        assert await reply.json() == {
            "status": "provisioning",
            "gpu": "l4",
            "bundle": "default",
            "estimated_wait_s": 5.0,
            "message": "No worker available for GPU type 'l4'. Provisioning in progress.",
        }


async def test_provisioning_202_defaults_match_the_documented_body(client, mesh):
    mesh.error = MeshError(
        ErrorCode.PROVISIONING, "No worker available for GPU type 'l4'. Provisioning in progress."
    )
    reply = await client.post(ENCODE, json=ONE_ITEM, headers={"X-SIE-MACHINE-PROFILE": "l4"})
    assert reply.status == 202
    assert reply.headers["Retry-After"] == "120"
    body = await reply.json()
    assert body["gpu"] == "l4" and body["bundle"] == "default" and body["estimated_wait_s"] == 120


async def test_provisioning_is_503_for_sdks_from_0_6_5(client, mesh):
    mesh.provisioning_until = float("inf")
    reply = await client.post(
        ENCODE,
        data=msgpack.packb(ONE_ITEM),
        headers={
            "Content-Type": "application/msgpack",
            "Accept": "application/msgpack",
            "X-SIE-SDK-Version": "0.10.1",
            "X-SIE-MACHINE-PROFILE": "l4",
        },
    )
    detail = await assert_envelope(reply, 503, "PROVISIONING")
    assert reply.headers["Retry-After"] == "1"
    assert detail["gpu"] == "l4"


async def test_pinned_pool_without_a_worker_is_never_provisioning(client, mesh):
    mesh.provisioning_until = float("inf")
    for headers in (
        {"X-SIE-Pool": "tenant-a"},
        {"X-SIE-MACHINE-PROFILE": "tenant-a/l4", "X-SIE-SDK-Version": "0.6.4"},
    ):
        reply = await client.post(ENCODE, json=ONE_ITEM, headers=headers)
        detail = await assert_envelope(reply, 503, "POOL_UNAVAILABLE")
        assert "tenant-a" in detail["message"]


# -- bad input -------------------------------------------------------------

_TOO_MANY = [{"text": "x"}] * 1001

BAD_BODIES = [
    (ENCODE, b"{not json", "body"),
    (ENCODE, b"", "body"),
    (ENCODE, b"[1, 2]", "body"),
    (ENCODE, b'{"items": [{"text": NaN}]}', "body"),
    (ENCODE, b'{"items": [{"text": "x"}], "params": {"options": {"t": Infinity}}}', "body"),
    (ENCODE, b'{"items": [{"text": "x"}]} trailing', "body"),
    (ENCODE, b"[" * 100_000, "body"),
    (ENCODE, {}, "items"),
    (ENCODE, {"items": []}, "items"),
    (ENCODE, {"items": "text"}, "items"),
    (ENCODE, {"items": _TOO_MANY}, "items"),
    (ENCODE, {"items": [3]}, "items[0]"),
    (ENCODE, {"items": [{}]}, "items[0]"),
    (ENCODE, {"items": [{"text": "a"}, {"text": 5}]}, "items[1].text"),
    (ENCODE, {"items": [{"text": "a", "id": 7}]}, "items[0].id"),
    (ENCODE, {"items": [{"images": [{"data": "***"}]}]}, "items[0].images[0].data"),
    (ENCODE, {"items": [{"images": [{"format": "png"}]}]}, "items[0].images[0].data"),
    (ENCODE, {"items": [{"images": "x.png"}]}, "items[0].images"),
    (ENCODE, {"items": [{"text": "a", "metadata": [1]}]}, "items[0].metadata"),
    (ENCODE, {"items": [{"text": "a", "metadata": {"n": 2**60}}]}, "items[0].metadata.n"),
    (ENCODE, {"items": [{"text": "a", "multivector": [[1.0]]}]}, "items[0].multivector"),
    (ENCODE, {"items": [{"text": "x"}], "params": []}, "params"),
    (
        ENCODE,
        {"items": [{"text": "x"}], "params": {"output_types": ["dense", "colour"]}},
        "params.output_types[1]",
    ),
    (ENCODE, {"items": [{"text": "x"}], "params": {"output_types": []}}, "params.output_types"),
    (ENCODE, {"items": [{"text": "x"}], "params": {"output_types": "dense"}}, "params.output_types"),
    (ENCODE, {"items": [{"text": "x"}], "params": {"output_dtype": "float64"}}, "params.output_dtype"),
    (ENCODE, {"items": [{"text": "x"}], "params": {"output_dtype": "bfloat16"}}, "params.output_dtype"),
    (ENCODE, {"items": [{"text": "x"}], "params": {"instruction": 1}}, "params.instruction"),
    (
        ENCODE,
        {"items": [{"text": "x"}], "params": {"options": {"is_query": "yes"}}},
        "params.options.is_query",
    ),
    (ENCODE, {"items": [{"text": "x"}], "params": {"options": {"lora": 1}}}, "params.options.lora"),
    (ENCODE, {"items": [{"text": "x"}], "params": {"options": "fast"}}, "params.options"),
    (SCORE, {"items": [{"text": "x"}]}, "query"),
    (SCORE, {"query": {"text": "q"}, "items": []}, "items"),
    (SCORE, {"query": {"text": "q"}, "items": _TOO_MANY}, "items"),
    (
        SCORE,
        {"query": {"text": "q"}, "items": [{"text": "x"}], "options": {"profile": ["a"]}},
        "options.profile",
    ),
    (SCORE, {"query": "q", "items": [{"text": "x"}]}, "query"),
    (EXTRACT, {"items": [{"text": "x"}], "params": {"labels": ["x"] * 1001}}, "params.labels"),
    (EXTRACT, {"items": [{"text": "x"}], "params": {"labels": ["x", 2]}}, "params.labels[1]"),
    (EXTRACT, {"items": [{"text": "x"}], "params": {"output_schema": "json"}}, "params.output_schema"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD_BODIES)
async def test_bad_input_is_400_naming_the_field(client, mesh, path, body, field):
    if isinstance(body, bytes):
        reply = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    else:
        reply = await client.post(path, json=body)
    await assert_envelope(reply, 400, "INVALID_INPUT", field)
    assert mesh.calls == []


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc1",  # never-used msgpack byte
        msgpack.packb({"items": [{"text": "x"}]}) + b"\x00",  # trailing data
        msgpack.packb({1: 2}),  # non-string map key
        b"\x91" * 5000 + b"\xc0",  # nested arrays past msgpack's depth
        msgpack.packb({"items": [{"text": b"\xff\xfe"}]}),  # bytes where text belongs
        msgpack.packb({"items": [{"text": "x", "metadata": {"blob": b"\x00"}}]}),
        msgpack.packb({"items": [{"text": "x"}], "params": {"options": {"t": float("nan")}}}),
        msgpack.packb({"items": [{"text": "x"}], "params": {"options": {"d": msgpack.ExtType(5, b"x")}}}),
    ],
)
async def test_bad_msgpack_is_400(client, mesh, raw):
    reply = await client.post(ENCODE, data=raw, headers={"Content-Type": "application/msgpack"})
    await assert_envelope(reply, 400, "INVALID_INPUT")
    assert mesh.calls == []


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"X-SIE-MACHINE-PROFILE": "l4 gpu"}, "X-SIE-MACHINE-PROFILE"),
        ({"X-SIE-MACHINE-PROFILE": "a/b/c"}, "X-SIE-MACHINE-PROFILE"),
        ({"X-SIE-Pool": "bad pool!"}, "X-SIE-Pool"),
        ({"X-SIE-Pool": "x" * 129}, "X-SIE-Pool"),
        ({"X-SIE-Pool": "a", "X-SIE-MACHINE-PROFILE": "b/l4"}, "X-SIE-Pool"),
    ],
)
async def test_bad_routing_headers_are_400(client, headers, field):
    await assert_envelope(
        await client.post(ENCODE, json=ONE_ITEM, headers=headers), 400, "INVALID_INPUT", field
    )


@pytest.mark.parametrize(
    "path", ["/v1/encode/org/mo%01del", "/v1/encode/org/my%20model", "/v1/encode/" + "m" * 600]
)
async def test_model_path_that_cannot_be_a_model_is_400(client, path):
    await assert_envelope(await client.post(path, json=ONE_ITEM), 400, "INVALID_INPUT", "model")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_wrong_content_type_is_415(client, content_type):
    reply = await client.post(ENCODE, data=b'{"items": []}', headers={"Content-Type": content_type})
    await assert_envelope(reply, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_body_over_the_limit_is_413_from_content_length_alone(make_client, mesh):
    client = await make_client(mesh, FacadeConfig(max_body_bytes=1024))
    reply = await client.post(ENCODE, data=b"x" * 2048, headers={"Content-Type": "application/json"})
    await assert_envelope(reply, 413, "PAYLOAD_TOO_LARGE")


async def test_chunked_body_over_the_limit_is_413(make_client, mesh):
    client = await make_client(mesh, FacadeConfig(max_body_bytes=1024))
    sent = 0

    async def chunks():
        nonlocal sent
        for _ in range(64):
            sent += 512
            yield b" " * 512

    reply = await client.post(ENCODE, data=chunks(), headers={"Content-Type": "application/json"})
    await assert_envelope(reply, 413, "PAYLOAD_TOO_LARGE")
    assert mesh.calls == []


async def test_compressed_body_over_the_limit_once_inflated_is_413(make_client, mesh):
    # The length header counts compressed bytes; the limit holds for what they inflate to.
    client = await make_client(mesh, FacadeConfig(max_body_bytes=1024))
    body = gzip.compress(b'{"items": [{"text": "' + b"a" * 4096 + b'"}]}')
    assert len(body) < 1024
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    reply = await client.post(ENCODE, data=body, headers=headers)
    await assert_envelope(reply, 413, "PAYLOAD_TOO_LARGE")
    assert mesh.calls == []


async def test_unknown_route_is_404_envelope(client):
    await assert_envelope(await client.get("/v2/whatever"), 404, "NOT_FOUND")
    await assert_envelope(await client.post("/v1/encode"), 404, "NOT_FOUND")


async def test_wrong_method_is_405_envelope_with_allow(client):
    reply = await client.get(ENCODE)
    await assert_envelope(reply, 405, "METHOD_NOT_ALLOWED")
    assert reply.headers["Allow"] == "POST"
    await assert_envelope(await client.delete("/v1/models"), 405, "METHOD_NOT_ALLOWED")


# -- replies that break the contract ---------------------------------------


class ShortMesh(FakeMesh):
    """Drops the last item, as a broken batch would."""

    async def encode(self, request, *, timeout_s, request_id):
        response = await super().encode(request, timeout_s=timeout_s, request_id=request_id)
        del response.items[-1]
        return response


class TornTensorMesh(FakeMesh):
    async def encode(self, request, *, timeout_s, request_id):
        response = await super().encode(request, timeout_s=timeout_s, request_id=request_id)
        response.items[0].dense.data = response.items[0].dense.data[:-1]
        return response


@pytest.mark.parametrize("mesh_type", [ShortMesh, TornTensorMesh])
@pytest.mark.parametrize("accept", ["application/json", "application/msgpack"])
async def test_a_reply_that_breaks_the_contract_is_a_502_not_a_silent_drop(make_client, mesh_type, accept):
    client = await make_client(mesh_type())
    reply = await client.post(
        ENCODE, json={"items": [{"text": "a"}, {"text": "b"}]}, headers={"Accept": accept}
    )
    await assert_envelope(reply, 502, "WORKER_FAILED")


async def test_bfloat16_tensors_widen_to_float32(make_client):
    class Bfloat16Mesh(FakeMesh):
        async def encode(self, request, *, timeout_s, request_id):
            # 1.0 and -2.5 in bfloat16: the top halves of their float32 bit patterns.
            tensor = common_pb2.Tensor(dtype=common_pb2.DTYPE_BFLOAT16, shape=[2], data=b"\x80\x3f\x20\xc0")
            return inference_pb2.EncodeResponse(items=[inference_pb2.EncodedItem(dense=tensor)])

    client = await make_client(Bfloat16Mesh())
    body = await (await client.post(ENCODE, json=ONE_ITEM)).json()
    assert body["items"][0]["dense"] == {"dims": 2, "dtype": "float32", "values": [1.0, -2.5]}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"items": [{"text": "\\ud800"}]}',
        b'{"items": [{"text": "x", "metadata": {"\\udc80": 1}}]}',
        b'{"items": [{"text": "x"}], "params": {"options": {"lora": "a\\udfffb"}}}',
    ],
)
async def test_lone_surrogates_are_400(client, mesh, raw):
    reply = await client.post(ENCODE, data=raw, headers={"Content-Type": "application/json"})
    await assert_envelope(reply, 400, "INVALID_INPUT", "body")
    assert mesh.calls == []
