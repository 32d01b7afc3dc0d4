"""Encode, score and extract through the facade: bodies, replies, headers, routing."""

from __future__ import annotations

import base64

import msgpack
import numpy as np
import pytest

from http_facade.config import SIE_API_VERSION
from http_facade.testing import (
    CURL_ENCODE_BODY,
    CURL_EXTRACT_BODY,
    CURL_SCORE_BODY,
    ENCODE_MODEL,
    EXTRACT_MODEL,
    SCORE_MODEL,
    FakeMesh,
    fake_dense,
    fake_multivector,
    fake_score,
    fake_sparse,
)
from mesh.v1 import common_pb2

MSGPACK = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}


def _decode_numpy(value: dict) -> np.ndarray:
    """What the SDK's msgpack-numpy hook does, strictly: bytes keys, exact lengths."""
    assert set(value) == {b"nd", b"type", b"kind", b"shape", b"data"}
    assert value[b"nd"] is True and value[b"kind"] == b"" and isinstance(value[b"data"], bytes)
    return np.frombuffer(value[b"data"], dtype=value[b"type"]).reshape(value[b"shape"])


async def test_encode_json_reply_has_plain_lists_one_item_per_input_in_order(client, mesh):
    items = [{"id": f"d{i}", "text": f"text number {i}"} for i in range(5)]
    reply = await client.post(f"/v1/encode/{ENCODE_MODEL}", json={"items": items})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    body = await reply.json()
    assert body["model"] == ENCODE_MODEL.lower()
    assert [item["id"] for item in body["items"]] == [f"d{i}" for i in range(5)]
    for index, item in enumerate(body["items"]):
        assert item["dense"] == {"dims": 8, "dtype": "float32", "values": fake_dense(f"text number {index}")}
    assert body["timing"] == {"total_ms": 2.0, "queue_ms": 0.5, "inference_ms": 1.5}


async def test_encode_msgpack_reply_carries_msgpack_numpy_maps_with_bytes_keys(client):
    body = msgpack.packb(
        {"items": [{"text": "hello world"}], "params": {"output_types": ["dense", "sparse", "multivector"]}}
    )
    reply = await client.post(f"/v1/encode/{ENCODE_MODEL}", data=body, headers=MSGPACK)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/msgpack"
    decoded = msgpack.unpackb(await reply.read(), raw=False)
    item = decoded["items"][0]
    assert "id" not in item
    dense = _decode_numpy(item["dense"]["values"])
    assert dense.dtype == np.float32 and dense.tolist() == fake_dense("hello world")
    indices, values = fake_sparse("hello world")
    assert _decode_numpy(item["sparse"]["indices"]).tolist() == indices
    assert _decode_numpy(item["sparse"]["values"]).tolist() == values
    assert item["sparse"]["dims"] == 30522
    multivector = item["multivector"]
    assert (multivector["num_tokens"], multivector["token_dims"]) == (2, 8)
    assert _decode_numpy(multivector["values"]).tolist() == fake_multivector("hello world")


async def test_encode_maps_params_and_options_onto_the_request_proto(client, mesh):
    body = {
        "items": [{"text": "q"}],
        "params": {
            "output_types": ["dense", "sparse"],
            "instruction": "Retrieve passages",
            "output_dtype": "float16",
            "options": {
                "is_query": True,
                "normalize": False,
                "lora": "legal",
                "profile": "fast",
                "muvera": {"k": 2},
            },
        },
    }
    reply = await client.post(f"/v1/encode/bundle:/{ENCODE_MODEL}:quality", json=body)
    assert reply.status == 200
    request = mesh.calls[-1].request
    # bundle:/ and :profile stay in the path: the router resolves them.
    assert request.model == f"bundle:/{ENCODE_MODEL}:quality"
    assert list(request.output_types) == ["dense", "sparse"]
    assert request.instruction == "Retrieve passages"
    assert request.output_dtype == common_pb2.DTYPE_FLOAT16
    assert request.options.is_query is True and request.options.HasField("normalize")
    assert request.options.normalize is False
    assert (request.options.lora, request.options.profile) == ("legal", "fast")
    assert dict(request.options.extra)["muvera"]["k"] == 2
    reply_body = await reply.json()
    assert reply_body["items"][0]["dense"]["dtype"] == "float16"
    assert reply_body["items"][0]["dense"]["values"] == fake_dense("q")


async def test_media_is_raw_bytes_in_msgpack_and_base64_in_json(client, mesh):
    png = b"\x89PNG\r\n\x1a\nrest"
    await client.post(
        f"/v1/encode/{ENCODE_MODEL}",
        data=msgpack.packb(
            {
                "items": [
                    {
                        "images": [{"data": png, "format": "png"}],
                        "audio": {"data": b"RIFF", "format": "wav", "sample_rate": 16000},
                    }
                ]
            }
        ),
        headers=MSGPACK,
    )
    await client.post(
        f"/v1/encode/{ENCODE_MODEL}",
        json={"items": [{"images": [{"data": base64.b64encode(png).decode()}], "metadata": {"page": 3}}]},
    )
    from_msgpack, from_json = (call.request.items[0] for call in mesh.calls)
    assert from_msgpack.images[0].data == png and from_msgpack.images[0].format == "png"
    assert from_msgpack.audio.data == b"RIFF" and from_msgpack.audio.format == "wav"
    assert from_json.images[0].data == png
    assert dict(from_json.metadata) == {"page": 3}


async def test_routing_target_comes_from_profile_and_pool_headers(client, mesh):
    async def target(headers):
        reply = await client.post(
            f"/v1/encode/{ENCODE_MODEL}", json={"items": [{"text": "x"}]}, headers=headers
        )
        assert reply.status == 200, await reply.text()
        return mesh.calls[-1].request.target.machine_profile, mesh.calls[-1].request.target.pool

    assert await target({}) == ("", "")
    assert await target({"X-SIE-MACHINE-PROFILE": "L4"}) == ("l4", "")
    assert await target({"X-SIE-Pool": "tenant-abc"}) == ("", "tenant-abc")
    # The SDK's gpu="tenant-abc/l4" sends both headers; the profile header alone means the same.
    assert await target({"X-SIE-MACHINE-PROFILE": "tenant-abc/l4", "X-SIE-Pool": "tenant-abc"}) == (
        "l4",
        "tenant-abc",
    )
    assert await target({"X-SIE-MACHINE-PROFILE": "tenant-abc/a100-80gb"}) == ("a100-80gb", "tenant-abc")


async def test_response_headers(client, mesh):
    reply = await client.post(f"/v1/encode/{ENCODE_MODEL}", json={"items": [{"text": "x"}]})
    assert reply.headers["X-SIE-Server-Version"] == SIE_API_VERSION
    assert reply.headers["X-SIE-Worker"] == "worker-0"
    assert reply.headers["Server"].startswith("inference-mesh/")
    assert reply.headers["Server-Timing"] == "queue;dur=0.500, inference;dur=1.500, total;dur=2.000"
    generated = reply.headers["X-SIE-Request-Id"]
    assert len(generated) >= 16 and mesh.calls[-1].request_id == generated

    echoed = await client.post(
        f"/v1/encode/{ENCODE_MODEL}",
        json={"items": [{"text": "x"}]},
        headers={"X-SIE-Request-Id": "trace-42"},
    )
    assert echoed.headers["X-SIE-Request-Id"] == "trace-42"
    assert mesh.calls[-1].request_id == "trace-42"

    # An id that could not be echoed safely is replaced, not refused.
    replaced = await client.post(
        f"/v1/encode/{ENCODE_MODEL}", json={"items": [{"text": "x"}]}, headers={"X-SIE-Request-Id": "a b"}
    )
    assert replaced.status == 200 and replaced.headers["X-SIE-Request-Id"] != "a b"


async def test_mesh_call_gets_the_request_budget(make_client):
    from http_facade import FacadeConfig

    mesh = FakeMesh()
    client = await make_client(mesh, FacadeConfig(request_timeout_s=7.5))
    await client.post(f"/v1/encode/{ENCODE_MODEL}", json={"items": [{"text": "x"}]})
    assert mesh.calls[-1].timeout_s == 7.5


async def test_score_is_sorted_best_first_with_ranks_and_default_item_ids(client, mesh):
    reply = await client.post(
        f"/v1/score/{SCORE_MODEL}",
        json=CURL_SCORE_BODY
        | {
            "items": [
                {"text": "bread recipes"},
                {"id": "b", "text": "a mesh routes requests"},
                {"text": "what mesh"},
            ]
        },
    )
    assert reply.status == 200
    body = await reply.json()
    assert body["model"] == SCORE_MODEL.lower()
    assert body["query_id"] == "q"
    expected = sorted(
        [
            ("item-0", fake_score("what is a mesh", "bread recipes")),
            ("b", fake_score("what is a mesh", "a mesh routes requests")),
            ("item-2", fake_score("what is a mesh", "what mesh")),
        ],
        key=lambda pair: -pair[1],
    )
    assert body["scores"] == [
        {"item_id": item_id, "score": pytest.approx(score), "rank": rank}
        for rank, (item_id, score) in enumerate(expected)
    ]


async def test_score_msgpack_and_options(client, mesh):
    body = msgpack.packb(
        {
            "query": {"text": "a"},
            "items": [{"text": "a"}],
            "instruction": "rank",
            "options": {"lora": "x", "temperature": 0.5},
        }
    )
    reply = await client.post(f"/v1/score/{SCORE_MODEL}", data=body, headers=MSGPACK)
    assert reply.status == 200
    decoded = msgpack.unpackb(await reply.read(), raw=False)
    assert decoded["scores"] == [{"item_id": "item-0", "score": 1.0, "rank": 0}]
    assert decoded["query_id"] is None
    request = mesh.calls[-1].request
    assert request.instruction == "rank" and request.options.lora == "x"
    assert dict(request.options.extra) == {"temperature": 0.5}


async def test_extract_replies_every_result_kind_per_item(client, mesh):
    reply = await client.post(
        f"/v1/extract/{EXTRACT_MODEL}",
        json={
            "items": [{"id": "x", "text": "Alice met Bob"}, {"text": "nobody here"}],
            "params": {
                "labels": ["person"],
                "output_schema": {"type": "object"},
                "instruction": "find people",
            },
        },
    )
    assert reply.status == 200
    body = await reply.json()
    assert body["items"][0] == {
        "id": "x",
        "entities": [
            {"text": "Alice", "label": "person", "score": 0.5, "start": 0, "end": 5},
            {"text": "Bob", "label": "person", "score": 0.5, "start": 10, "end": 13},
        ],
        "relations": [],
        "classifications": [{"label": "person", "score": 0.75}],
        "objects": [],
    }
    assert body["items"][1]["entities"] == []
    request = mesh.calls[-1].request
    assert list(request.labels) == ["person"]
    assert dict(request.output_schema) == {"type": "object"}
    assert dict(request.options.extra) == {"instruction": "find people"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"/v1/encode/{ENCODE_MODEL}", CURL_ENCODE_BODY),
        (f"/v1/score/{SCORE_MODEL}", CURL_SCORE_BODY),
        (f"/v1/extract/{EXTRACT_MODEL}", CURL_EXTRACT_BODY),
    ],
)
async def test_curl_bodies(client, path, body):
    # No Accept header at all, as curl sends by default: JSON.
    reply = await client.post(path, json=body, skip_auto_headers=["Accept"])
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"


async def test_accept_msgpack_with_a_json_body(client):
    reply = await client.post(
        f"/v1/encode/{ENCODE_MODEL}",
        json={"items": [{"text": "x"}]},
        headers={"Accept": "application/msgpack"},
    )
    assert reply.headers["Content-Type"] == "application/msgpack"
    assert _decode_numpy(
        msgpack.unpackb(await reply.read(), raw=False)["items"][0]["dense"]["values"]
    ).shape == (8,)
