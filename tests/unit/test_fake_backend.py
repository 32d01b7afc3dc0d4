"""The fake backend: exact, deterministic outputs, its latency model and its faults."""

from __future__ import annotations

import asyncio
import hashlib
import time

import numpy as np
import pytest

from mesh.catalog import GLINER_MODEL_ID, MINILM_MODEL_ID, RERANKER_MODEL_ID, load_catalog
from mesh.errors import ErrorCode, MeshError
from mesh.v1 import common_pb2, inference_pb2
from worker_agent.backends import create_backend
from worker_agent.backends.base import Backend, BatchTarget
from worker_agent.backends.dense_output import dense_response, quantize, tensor_to_array
from worker_agent.backends.fake import (
    FakeBackend,
    FakeBackendConfig,
    FakeEntity,
    fake_embedding,
    fake_entities,
    fake_score,
)

pytestmark = pytest.mark.timeout(20)

CATALOG = load_catalog()
TARGET = BatchTarget(MINILM_MODEL_ID, "default")


def encode_request(*texts: str, **fields) -> inference_pb2.EncodeRequest:
    return inference_pb2.EncodeRequest(
        items=[common_pb2.Item(id=f"i{index}", text=text) for index, text in enumerate(texts)], **fields
    )


# -- the pure functions ------------------------------------------------------------------


def test_fake_embedding_is_a_deterministic_unit_float32_vector():
    vector = fake_embedding(MINILM_MODEL_ID, "hello world")
    assert vector.dtype == np.float32 and vector.shape == (384,)
    assert np.linalg.norm(vector.astype(np.float64)) == pytest.approx(1.0, abs=1e-6)
    assert np.array_equal(vector, fake_embedding(MINILM_MODEL_ID, "hello world"))
    assert not vector.flags.writeable


def test_fake_embedding_is_pinned_to_its_documented_recipe():
    # Independent of the cache and of numpy's random streams: SHAKE-256 of the key.
    raw = hashlib.shake_256(b"sentence-transformers/all-minilm-l6-v2\x00\x00hello").digest(4 * 8)
    uniform = np.frombuffer(raw, dtype="<u4").astype(np.float64) * (2.0 / 2**32) - 1.0
    expected = (uniform / np.linalg.norm(uniform)).astype(np.float32)
    assert np.array_equal(fake_embedding(MINILM_MODEL_ID, "hello", dims=8), expected)


def test_fake_embedding_depends_on_model_text_and_lora_but_not_model_case():
    base = fake_embedding("org/model", "text")
    assert np.array_equal(base, fake_embedding("ORG/Model", "text"))
    assert not np.array_equal(base, fake_embedding("org/other", "text"))
    assert not np.array_equal(base, fake_embedding("org/model", "text2"))
    assert not np.array_equal(base, fake_embedding("org/model", "text", lora="a"))
    assert fake_embedding("org/model", "text", dims=16).shape == (16,)
    with pytest.raises(ValueError):
        fake_embedding("org/model", "text", dims=0)


def test_fake_score_is_the_cosine_of_fake_embeddings():
    query, text = "what is a cat", "a cat is an animal"
    expected = float(
        np.float32(
            np.dot(
                fake_embedding("m", query).astype(np.float64), fake_embedding("m", text).astype(np.float64)
            )
        )
    )
    assert fake_score("m", query, text) == expected
    assert fake_score("m", text, text) == pytest.approx(1.0, abs=1e-6)


def test_fake_entities_are_capitalised_words_with_offsets():
    text = "Alice met bob and Carol in Paris."
    entities = fake_entities("m", text, ["person", "place"])
    assert [entity.text for entity in entities] == ["Alice", "Carol", "Paris"]
    for entity in entities:
        assert text[entity.start : entity.end] == entity.text
        assert entity.label in ("person", "place")
        assert 0.5 <= entity.score < 1.0
        assert entity.score == float(np.float32(entity.score))
    assert entities == fake_entities("m", text, ["person", "place"])
    assert {entity.label for entity in fake_entities("m", text)} == {"entity"}


# -- the backend -------------------------------------------------------------------------


def test_fake_backend_is_a_backend_and_registered_by_name():
    backend = create_backend("fake", FakeBackendConfig(dims=8))
    assert isinstance(backend, FakeBackend) and isinstance(backend, Backend)
    assert backend.name == "fake" and backend.config.dims == 8
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend("no-such-backend")


async def test_encode_answers_exact_vectors_per_request():
    backend = FakeBackend()
    outcomes = await backend.encode(
        TARGET, [encode_request("a", "b"), encode_request("c", instruction="query: ")]
    )
    first, second = outcomes
    assert [item.id for item in first.items] == ["i0", "i1"]
    for item, text in zip(first.items, ["a", "b"], strict=True):
        assert item.dense.dtype == common_pb2.DTYPE_FLOAT32 and list(item.dense.shape) == [384]
        assert np.array_equal(tensor_to_array(item.dense), fake_embedding(MINILM_MODEL_ID, text))
    # The instruction is prepended, as sentence-transformers prepends a prompt.
    assert np.array_equal(tensor_to_array(second.items[0].dense), fake_embedding(MINILM_MODEL_ID, "query: c"))


async def test_encode_uses_the_batch_lora_and_configured_dims():
    backend = FakeBackend(FakeBackendConfig(dims=32))
    (outcome,) = await backend.encode(
        BatchTarget(MINILM_MODEL_ID, "default", "adapter"), [encode_request("x")]
    )
    assert np.array_equal(
        tensor_to_array(outcome.items[0].dense), fake_embedding(MINILM_MODEL_ID, "x", lora="adapter", dims=32)
    )


async def test_encode_fails_only_the_bad_request():
    backend = FakeBackend()
    no_text = inference_pb2.EncodeRequest(items=[common_pb2.Item(id="img")])
    sparse = encode_request("a", output_types=["sparse"])
    bad_dtype = encode_request("a", output_dtype=common_pb2.DTYPE_INT64)
    good = encode_request("a")
    outcomes = await backend.encode(TARGET, [no_text, sparse, bad_dtype, good])
    assert isinstance(outcomes[0], MeshError) and outcomes[0].code is ErrorCode.INVALID_INPUT
    assert outcomes[0].field == "items[0].text"
    assert isinstance(outcomes[1], MeshError) and outcomes[1].code is ErrorCode.UNSUPPORTED_OPERATION
    assert isinstance(outcomes[2], MeshError) and outcomes[2].code is ErrorCode.INVALID_INPUT
    assert isinstance(outcomes[3], inference_pb2.EncodeResponse)


@pytest.mark.parametrize(
    ("dtype", "storage", "width"),
    [
        (common_pb2.DTYPE_FLOAT16, np.float16, 384),
        (common_pb2.DTYPE_BFLOAT16, np.uint16, 384),
        (common_pb2.DTYPE_INT8, np.int8, 384),
        (common_pb2.DTYPE_UINT8, np.uint8, 384),
        (common_pb2.DTYPE_BINARY, np.uint8, 48),
    ],
)
async def test_encode_quantises_like_dense_output(dtype, storage, width):
    backend = FakeBackend()
    (outcome,) = await backend.encode(TARGET, [encode_request("quantise me", output_dtype=dtype)])
    tensor = outcome.items[0].dense
    assert tensor.dtype == dtype and list(tensor.shape) == [width]
    array = tensor_to_array(tensor)
    assert array.dtype == storage
    expected = quantize(fake_embedding(MINILM_MODEL_ID, "quantise me")[None, :], dtype)[0]
    assert np.array_equal(array, expected)


def test_quantisation_maps_documented_ranges():
    matrix = np.array([[1.0, -1.0, 0.0, 0.5, -0.25, 2.0, 0.001, -0.001]], dtype=np.float32)
    assert quantize(matrix, common_pb2.DTYPE_INT8).tolist() == [[127, -127, 0, 64, -32, 127, 0, 0]]
    assert quantize(matrix, common_pb2.DTYPE_UINT8).tolist() == [[255, 0, 128, 191, 96, 255, 128, 127]]
    assert quantize(matrix, common_pb2.DTYPE_BINARY).tolist() == [[0b10010110]]
    bf16 = quantize(matrix, common_pb2.DTYPE_BFLOAT16)
    widened = (bf16.astype(np.uint32) << 16).view(np.float32)
    assert np.allclose(widened, matrix, rtol=1e-2)
    assert np.array_equal(quantize(matrix, common_pb2.DTYPE_FLOAT16), matrix.astype(np.float16))
    response = dense_response([common_pb2.Item(id="x", text="t")], matrix, common_pb2.DTYPE_UNSPECIFIED)
    (item,) = response.items
    tensor = item.dense
    assert item.id == "x" and list(tensor.shape) == [matrix.shape[1]]
    assert tensor.dtype == common_pb2.DTYPE_FLOAT32 and tensor.data == matrix[0].astype("<f4").tobytes()
    with pytest.raises(ValueError):
        dense_response([], matrix, common_pb2.DTYPE_FLOAT32)  # one row per item


async def test_score_ranks_items_by_fake_score():
    backend = FakeBackend()
    texts = ["alpha", "beta", "gamma", "delta"]
    request = inference_pb2.ScoreRequest(
        query=common_pb2.Item(id="q", text="question"),
        items=[common_pb2.Item(id="a", text=texts[0])] + [common_pb2.Item(text=text) for text in texts[1:]],
    )
    (outcome,) = await backend.score(BatchTarget(RERANKER_MODEL_ID, "default"), [request])
    assert outcome.query_id == "q"
    expected = {
        ("a" if index == 0 else f"item-{index}"): fake_score(RERANKER_MODEL_ID, "question", text)
        for index, text in enumerate(texts)
    }
    assert {score.item_id: score.score for score in outcome.scores} == pytest.approx(expected, abs=0)
    assert [score.rank for score in outcome.scores] == [0, 1, 2, 3]
    values = [score.score for score in outcome.scores]
    assert values == sorted(values, reverse=True)


async def test_extract_returns_fake_entities_per_item():
    backend = FakeBackend()
    request = inference_pb2.ExtractRequest(
        items=[common_pb2.Item(id="d1", text="Ada Lovelace wrote notes")], labels=["person"]
    )
    (outcome,) = await backend.extract(BatchTarget(GLINER_MODEL_ID, "default"), [request])
    entities = [
        FakeEntity(entity.text, entity.label, entity.score, entity.start, entity.end)
        for entity in outcome.items[0].entities
    ]
    assert outcome.items[0].id == "d1"
    assert entities == fake_entities(GLINER_MODEL_ID, "Ada Lovelace wrote notes", ["person"])


# -- latency model and faults -------------------------------------------------------------


def test_latency_model_is_fixed_plus_per_item():
    config = FakeBackendConfig(fixed_latency_s=0.010, per_item_latency_s=0.001)
    assert config.batch_latency_s(0) == pytest.approx(0.010)
    assert config.batch_latency_s(32) == pytest.approx(0.042)
    # Batching pays: one batch of 32 costs less than 32 batches of one.
    assert config.batch_latency_s(32) < 32 * config.batch_latency_s(1)
    assert FakeBackendConfig().batch_latency_s(1000) == 0.0


async def test_a_batch_takes_its_modelled_latency():
    backend = FakeBackend(FakeBackendConfig(fixed_latency_s=0.05, per_item_latency_s=0.01))
    started = time.monotonic()
    await backend.encode(TARGET, [encode_request("a", "b"), encode_request("c")])
    assert time.monotonic() - started >= 0.08 - 0.005


def test_config_refuses_nonsense():
    with pytest.raises(ValueError):
        FakeBackendConfig(dims=0)
    with pytest.raises(ValueError):
        FakeBackendConfig(fixed_latency_s=-1)
    with pytest.raises(ValueError):
        FakeBackendConfig(fail_every_nth_batch=-1)


async def test_load_serves_any_model_after_its_delay_unless_told_to_fail():
    backend = FakeBackend(FakeBackendConfig(load_delay_s=0.05, fail_load=frozenset({GLINER_MODEL_ID})))
    started = time.monotonic()
    loaded = await backend.load(CATALOG.model(MINILM_MODEL_ID))
    assert time.monotonic() - started >= 0.045
    assert loaded.model_id == MINILM_MODEL_ID and loaded.dims == 384
    assert MINILM_MODEL_ID.lower() in backend.loaded
    with pytest.raises(MeshError) as failure:
        await backend.load(CATALOG.model(GLINER_MODEL_ID))
    assert failure.value.code is ErrorCode.MODEL_LOAD_FAILED and not failure.value.retryable
    await backend.unload(MINILM_MODEL_ID)
    assert not backend.loaded


async def test_every_nth_batch_fails():
    backend = FakeBackend(FakeBackendConfig(fail_every_nth_batch=3))
    results = []
    for _ in range(6):
        try:
            await backend.encode(TARGET, [encode_request("x")])
            results.append("ok")
        except MeshError as error:
            results.append(error.code)
    assert results == ["ok", "ok", ErrorCode.WORKER_FAILED, "ok", "ok", ErrorCode.WORKER_FAILED]


async def test_batches_above_the_item_limit_run_out_of_memory():
    backend = FakeBackend(FakeBackendConfig(oom_above_items=2))
    await backend.encode(TARGET, [encode_request("a", "b")])
    with pytest.raises(MeshError) as failure:
        await backend.encode(TARGET, [encode_request("a", "b"), encode_request("c")])
    assert failure.value.code is ErrorCode.RESOURCE_EXHAUSTED and failure.value.retryable


async def test_a_stalled_backend_never_answers():
    backend = FakeBackend(FakeBackendConfig(stall=True))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await backend.encode(TARGET, [encode_request("a")])
    assert backend.batch_sizes == [1]
