"""A fake backend: exact, deterministic outputs and scriptable faults.

Every output is a pure function of (model, text, LoRA adapter), exposed here
so tests anywhere (the router's, the HTTP facade's) can compute the exact
values a fake worker answers with:

- encode: `fake_embedding(model_id, instruction + text, lora=..., dims=...)`,
  a unit-norm float32 vector expanded from SHAKE-256 of the key (stable across
  platforms and numpy versions), then quantised to the requested dtype exactly
  as the real backends do (`dense_output`). The instruction is prepended with
  no separator, as sentence-transformers prepends a prompt. The vectors are
  unit norm whether or not `normalize` is asked for.
- score: `fake_score(...)`, the cosine similarity (a dot product of unit
  vectors) of the fake embeddings of query and item, rounded to float32.
- extract: `fake_entities(...)`, every capitalised word, labelled with one of
  the request's labels chosen by hash (`entity` when none are given).

Model ids are compared lower-cased, as the router matches them.

A latency model (fixed + per item, per batch) makes batching pay the way it
does on a real accelerator; it is zero by default so benchmarks measure the
mesh, not the fake. Faults: slow loads, failed loads, every Nth batch failing,
out of memory above a batch size, and stalling (never answering).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mesh.catalog import ModelConfig
from mesh.errors import ErrorCode, MeshError
from mesh.v1 import inference_pb2
from worker_agent.backends.base import (
    BatchTarget,
    EncodeOutcome,
    ExtractOutcome,
    LoadedModel,
    ScoreOutcome,
)
from worker_agent.backends.dense_output import dense_response
from worker_agent.backends.payloads import dense_encode_problem, item_texts, ranked_scores

DEFAULT_DIMS = 384
DEFAULT_ENTITY_LABEL = "entity"
_CAPITALISED_WORD = re.compile(r"\b[A-Z][\w'-]*")


def _key(model_id: str, lora: str, text: str) -> bytes:
    # NUL separators: no (model, lora, text) triple can collide with another.
    return f"{model_id.lower()}\x00{lora}\x00{text}".encode()


@functools.lru_cache(maxsize=8192)
def _cached_embedding(model_id: str, text: str, lora: str, dims: int) -> np.ndarray:
    raw = hashlib.shake_256(_key(model_id, lora, text)).digest(4 * dims)
    uniform = np.frombuffer(raw, dtype="<u4").astype(np.float64) * (2.0 / 2**32) - 1.0
    vector = (uniform / np.linalg.norm(uniform)).astype(np.float32)
    vector.flags.writeable = False  # shared by the cache
    return vector


def fake_embedding(model_id: str, text: str, *, lora: str = "", dims: int = DEFAULT_DIMS) -> np.ndarray:
    """The float32 unit vector a fake worker returns for `text` (read-only array)."""
    if dims <= 0:
        raise ValueError("dims must be positive")
    return _cached_embedding(model_id.lower(), text, lora, dims)


def fake_score(model_id: str, query: str, text: str, *, lora: str = "", dims: int = DEFAULT_DIMS) -> float:
    """The score a fake worker gives `text` for `query`: cosine of their fake embeddings."""
    query_vector = fake_embedding(model_id, query, lora=lora, dims=dims)
    text_vector = fake_embedding(model_id, text, lora=lora, dims=dims)
    return float(np.float32(np.dot(query_vector.astype(np.float64), text_vector.astype(np.float64))))


@dataclass(frozen=True, slots=True)
class FakeEntity:
    text: str
    label: str
    score: float
    """In [0.5, 1.0), float32-exact."""
    start: int
    """Character offset of the first character."""
    end: int
    """Character offset just past the last character."""


def fake_entities(
    model_id: str, text: str, labels: Sequence[str] = (), *, lora: str = ""
) -> list[FakeEntity]:
    """The entities a fake worker extracts from `text`: its capitalised words."""
    entities = []
    for match in _CAPITALISED_WORD.finditer(text):
        word = match.group(0)
        digest = int.from_bytes(hashlib.blake2b(_key(model_id, lora, word), digest_size=8).digest(), "little")
        label = labels[digest % len(labels)] if labels else DEFAULT_ENTITY_LABEL
        score = float(np.float32(0.5 + (digest >> 32) % 5000 / 10000.0))
        entities.append(FakeEntity(word, label, score, match.start(), match.end()))
    return entities


@dataclass(frozen=True)
class FakeBackendConfig:
    """How a fake backend behaves. The defaults answer at once and never fail."""

    dims: int = DEFAULT_DIMS
    """Dense output dimensions."""
    fixed_latency_s: float = 0.0
    """Time every batch takes, whatever its size (the launch cost batching amortises)."""
    per_item_latency_s: float = 0.0
    """Time each item adds to its batch."""
    load_delay_s: float = 0.0
    """Time a model load takes."""
    fail_load: frozenset[str] = frozenset()
    """Model ids (lower-cased) whose load fails permanently (MODEL_LOAD_FAILED)."""
    fail_every_nth_batch: int = 0
    """Fail every Nth batch with WORKER_FAILED; 0 never."""
    oom_above_items: int = 0
    """Fail batches of more items than this with RESOURCE_EXHAUSTED; 0 never."""
    stall: bool = False
    """Never answer a batch (it runs until cancelled), as a hung accelerator would."""

    def __post_init__(self) -> None:
        if self.dims <= 0:
            raise ValueError("dims must be positive")
        for name in ("fixed_latency_s", "per_item_latency_s", "load_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.fail_every_nth_batch < 0 or self.oom_above_items < 0:
            raise ValueError("fault counts must not be negative")
        object.__setattr__(self, "fail_load", frozenset(model.lower() for model in self.fail_load))

    def batch_latency_s(self, items: int) -> float:
        """How long a batch of `items` items takes."""
        return self.fixed_latency_s + self.per_item_latency_s * items


class FakeBackend:
    """Serves every model it is asked to load, with the outputs the module describes."""

    name = "fake"

    def __init__(self, config: FakeBackendConfig | None = None) -> None:
        self.config = config or FakeBackendConfig()
        self.loaded: set[str] = set()
        """Lower-cased ids of the loaded models."""
        self.batches_run = 0
        """Batches started so far (faults count them)."""
        self.batch_sizes: list[int] = []
        """Requests per batch, in start order, for tests that check grouping."""

    async def load(self, model: ModelConfig) -> LoadedModel:
        if self.config.load_delay_s:
            await asyncio.sleep(self.config.load_delay_s)
        model_key = model.model_id.lower()
        if model_key in self.config.fail_load:
            raise MeshError(
                ErrorCode.MODEL_LOAD_FAILED, f"fake backend: {model.model_id} is set to fail loading"
            )
        self.loaded.add(model_key)
        return LoadedModel(model.model_id, memory_bytes=0, dims=self.config.dims)

    async def unload(self, model_id: str) -> None:
        self.loaded.discard(model_id.lower())

    async def close(self) -> None:
        self.loaded.clear()

    async def _run_batch(self, requests: int, items: int) -> None:
        """Account for one batch: faults first, then the latency model."""
        self.batches_run += 1
        self.batch_sizes.append(requests)
        config = self.config
        if config.stall:
            await asyncio.get_running_loop().create_future()  # until cancelled
        if config.fail_every_nth_batch and self.batches_run % config.fail_every_nth_batch == 0:
            raise MeshError(
                ErrorCode.WORKER_FAILED, f"fake backend: injected failure of batch {self.batches_run}"
            )
        if config.oom_above_items and items > config.oom_above_items:
            raise MeshError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"fake backend: out of memory on a batch of {items} items (limit {config.oom_above_items})",
            )
        latency_s = config.batch_latency_s(items)
        if latency_s > 0:
            await asyncio.sleep(latency_s)

    async def encode(
        self, target: BatchTarget, requests: Sequence[inference_pb2.EncodeRequest]
    ) -> list[EncodeOutcome]:
        await self._run_batch(len(requests), sum(len(request.items) for request in requests))
        dims = self.config.dims
        outcomes: list[EncodeOutcome | None] = [None] * len(requests)
        vectors: list[np.ndarray] = []
        spans: list[tuple[int, int]] = []  # (request index, first row)
        for index, request in enumerate(requests):
            try:
                problem = dense_encode_problem(request)
                if problem is not None:
                    raise problem
                prefix = request.instruction if request.HasField("instruction") else ""
                texts = item_texts(request.items)
            except MeshError as error:
                outcomes[index] = error
                continue
            spans.append((index, len(vectors)))
            vectors.extend(
                fake_embedding(target.model_id, prefix + text, lora=target.lora, dims=dims) for text in texts
            )
        # One matrix for the whole batch, as a model computes it; each request takes its rows.
        matrix = np.stack(vectors) if vectors else np.zeros((0, dims), dtype=np.float32)
        for index, first in spans:
            request = requests[index]
            rows = matrix[first : first + len(request.items)]
            outcomes[index] = dense_response(request.items, rows, request.output_dtype)
        return outcomes  # type: ignore[return-value] - every slot is filled above

    async def score(
        self, target: BatchTarget, requests: Sequence[inference_pb2.ScoreRequest]
    ) -> list[ScoreOutcome]:
        await self._run_batch(len(requests), sum(len(request.items) for request in requests))
        dims = self.config.dims
        outcomes: list[ScoreOutcome] = []
        for request in requests:
            try:
                query = item_texts([request.query], field="query")[0]
                texts = item_texts(request.items)
            except MeshError as error:
                outcomes.append(error)
                continue
            if request.HasField("instruction"):
                query = request.instruction + query
            scores = [fake_score(target.model_id, query, text, lora=target.lora, dims=dims) for text in texts]
            outcomes.append(
                inference_pb2.ScoreResponse(
                    query_id=request.query.id, scores=ranked_scores(request.items, scores)
                )
            )
        return outcomes

    async def extract(
        self, target: BatchTarget, requests: Sequence[inference_pb2.ExtractRequest]
    ) -> list[ExtractOutcome]:
        await self._run_batch(len(requests), sum(len(request.items) for request in requests))
        outcomes: list[ExtractOutcome] = []
        for request in requests:
            try:
                texts = item_texts(request.items)
            except MeshError as error:
                outcomes.append(error)
                continue
            labels = list(request.labels)
            items = []
            for item, text in zip(request.items, texts, strict=True):
                entities = [
                    inference_pb2.Entity(
                        text=entity.text,
                        label=entity.label,
                        score=entity.score,
                        start=entity.start,
                        end=entity.end,
                    )
                    for entity in fake_entities(target.model_id, text, labels, lora=target.lora)
                ]
                items.append(inference_pb2.ExtractedItem(id=item.id, entities=entities))
            outcomes.append(inference_pb2.ExtractResponse(items=items))
        return outcomes
