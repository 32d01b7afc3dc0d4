"""FakeMesh: a deterministic, scriptable MeshService for tests and benchmarks.

A fake, not a mock: it answers like a small fleet (one result per item, real
tensors, ranked scores), records every call, and can be told to fail, to
report no capacity for a while, or to hang until cancelled, so facade tests
(and the SDK acceptance tests) exercise real behaviour without a router.

Outputs are functions of the input only (`fake_dense`, `fake_score`, ...)
and use values exactly representable in float16, so a test can compute the
expected vector itself and compare for equality.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf import timestamp_pb2

from mesh.errors import ErrorCode, MeshError
from mesh.v1 import cluster_pb2, common_pb2, inference_pb2, registry_pb2

DEFAULT_DIMS = 8

# The models a default FakeMesh serves, spelled as a client would.
ENCODE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SCORE_MODEL = "BAAI/bge-reranker-base"
EXTRACT_MODEL = "urchade/gliner"

# JSON bodies as curl sends them (`-H 'Content-Type: application/json' -d ...`);
# the facade tests post exactly these, so README examples built on them work.
CURL_ENCODE_BODY = {"items": [{"id": "d1", "text": "hello world"}], "params": {"output_types": ["dense"]}}
CURL_SCORE_BODY = {
    "query": {"id": "q", "text": "what is a mesh"},
    "items": [{"id": "a", "text": "a mesh routes requests"}, {"id": "b", "text": "bread recipes"}],
}
CURL_EXTRACT_BODY = {"items": [{"text": "Alice met Bob in Paris"}], "params": {"labels": ["person"]}}

_NUMPY_TYPES = {
    common_pb2.DTYPE_UNSPECIFIED: "<f4",
    common_pb2.DTYPE_FLOAT32: "<f4",
    common_pb2.DTYPE_FLOAT16: "<f2",
    common_pb2.DTYPE_INT8: "|i1",
    common_pb2.DTYPE_UINT8: "|u1",
    common_pb2.DTYPE_BINARY: "|u1",
}


def _text_code(text: str) -> int:
    return sum(text.encode())


def fake_dense(text: str, dims: int = DEFAULT_DIMS) -> list[float]:
    """The fake's dense vector for `text`: eighths in [0, 12], exact in float16."""
    code = _text_code(text)
    return [((code + 7 * k) % 97) / 8.0 for k in range(dims)]


def fake_sparse(text: str) -> tuple[list[int], list[float]]:
    """(indices, values): one entry per distinct word, indices ascending."""
    words = sorted({_text_code(word) % 30522 for word in text.split()} or {0})
    return words, [1.0 + (index % 4) / 4.0 for index in words]


def fake_multivector(text: str, dims: int = DEFAULT_DIMS) -> list[list[float]]:
    """One row per word (at least one)."""
    return [fake_dense(word, dims) for word in (text.split() or [text])]


def fake_score(query: str, text: str) -> float:
    """Shared lower-case words over the item's word count, in [0, 1], exact in float32."""
    query_words = set(query.lower().split())
    words = text.lower().split()
    if not words:
        return 0.0
    shared = sum(1 for word in words if word in query_words)
    return float(np.float32(shared / len(words)))


def fake_entities(text: str, labels: Iterable[str]) -> list[dict[str, Any]]:
    """Every capitalised word, labelled with the first label (or "entity")."""
    label = next(iter(labels), "entity")
    entities = []
    position = 0
    for word in text.split(" "):
        if word[:1].isupper():
            entities.append(
                {"text": word, "label": label, "score": 0.5, "start": position, "end": position + len(word)}
            )
        position += len(word) + 1
    return entities


def _tensor(values: Any, dtype: int, numpy_type: str | None = None) -> common_pb2.Tensor:
    array = np.asarray(values, dtype=numpy_type or _NUMPY_TYPES.get(dtype, "<f4"))
    return common_pb2.Tensor(dtype=dtype, shape=list(array.shape), data=array.tobytes())


def canonical_model(model: str) -> str:
    """`bundle:/Org/Model:profile` -> `org/model` (the router's resolution, simplified)."""
    if ":/" in model:
        model = model.split(":/", 1)[1]
    return model.rsplit(":", 1)[0].lower()


@dataclass
class FakeWorker:
    worker_id: str
    machine_profile: str = "l4"
    bundle: str = "default"
    pool: str = ""
    models: tuple[str, ...] = ()
    queue_depth: int = 0
    healthy: bool = True


@dataclass
class RecordedCall:
    method: str
    request: Any
    timeout_s: float
    request_id: str


@dataclass
class FakeMesh:
    """A MeshService whose behaviour a test scripts through its fields."""

    models: tuple[str, ...] = (ENCODE_MODEL.lower(), SCORE_MODEL.lower(), EXTRACT_MODEL.lower())
    """Model ids served (lower-case); others answer MODEL_NOT_FOUND."""
    config_epoch: int = 0
    """Config epoch the cluster health reports."""
    store_connected: bool = True
    """Whether the cluster health reports the coordination store reachable."""
    config_deltas: dict[tuple[str, str], int] = field(default_factory=dict)
    """Config changes the cluster health reports, by (kind, result)."""
    pool_events: dict[str, int] = field(default_factory=dict)
    """Pool events the cluster health reports, by event."""
    workers: list[FakeWorker] = field(
        default_factory=lambda: [FakeWorker("worker-0", "l4", models=(ENCODE_MODEL.lower(),), queue_depth=2)]
    )
    dims: int = DEFAULT_DIMS
    is_ready: bool = True
    error: MeshError | None = None
    """Raised by every inference call while set."""
    errors: list[MeshError] = field(default_factory=list)
    """Raised by the next inference calls, one each, before `error` applies."""
    provisioning_until: float | None = None
    """time.monotonic() before which inference answers PROVISIONING (capacity appears after)."""
    hang: bool = False
    """Inference calls never get an answer: they end when cancelled (a client that
    disconnects) or, as the MeshService contract says, with DEADLINE_EXCEEDED
    once their timeout_s has passed."""
    worker_id: str = "worker-0"
    clock: Callable[[], float] = time.monotonic
    health_reads: int = 0
    """Cluster health reads so far (/health, /metrics, the status socket)."""
    calls: list[RecordedCall] = field(default_factory=list)
    cancelled: list[RecordedCall] = field(default_factory=list)
    """Calls whose awaiting task was cancelled while inside the mesh."""
    timed_out: list[RecordedCall] = field(default_factory=list)
    """Calls that hung past their timeout_s and answered DEADLINE_EXCEEDED."""
    pending: list[cluster_pb2.PendingDemand] = field(default_factory=list)
    started: asyncio.Event | None = None
    """Set (if given) when an inference call begins: lets a test wait for it."""

    # -- MeshService -------------------------------------------------------

    async def encode(
        self, request: inference_pb2.EncodeRequest, *, timeout_s: float, request_id: str
    ) -> inference_pb2.EncodeResponse:
        await self._enter("encode", request, timeout_s, request_id)
        output_types = list(request.output_types) or ["dense"]
        dtype = request.output_dtype or common_pb2.DTYPE_FLOAT32
        response = inference_pb2.EncodeResponse(
            model=canonical_model(request.model),
            worker_id=self.worker_id,
            request_id=request_id,
            timing=common_pb2.Timing(total_ms=2.0, queue_ms=0.5, inference_ms=1.5),
        )
        for item in request.items:
            out = response.items.add(id=item.id)
            text = item.text
            if "dense" in output_types:
                out.dense.CopyFrom(_tensor(fake_dense(text, self.dims), dtype))
            if "sparse" in output_types:
                indices, values = fake_sparse(text)
                out.sparse.indices.CopyFrom(_tensor(indices, common_pb2.DTYPE_INT32, "<i4"))
                out.sparse.values.CopyFrom(_tensor(values, common_pb2.DTYPE_FLOAT32))
                out.sparse.dims = 30522
            if "multivector" in output_types:
                out.multivector.CopyFrom(_tensor(fake_multivector(text, self.dims), dtype))
        return response

    async def score(
        self, request: inference_pb2.ScoreRequest, *, timeout_s: float, request_id: str
    ) -> inference_pb2.ScoreResponse:
        await self._enter("score", request, timeout_s, request_id)
        scored = sorted(
            ((fake_score(request.query.text, item.text), item.id) for item in request.items),
            key=lambda pair: -pair[0],
        )
        response = inference_pb2.ScoreResponse(
            model=canonical_model(request.model),
            query_id=request.query.id,
            worker_id=self.worker_id,
            request_id=request_id,
            timing=common_pb2.Timing(total_ms=3.0, queue_ms=1.0, inference_ms=2.0),
        )
        for rank, (score, item_id) in enumerate(scored):
            response.scores.add(item_id=item_id, score=score, rank=rank)
        return response

    async def extract(
        self, request: inference_pb2.ExtractRequest, *, timeout_s: float, request_id: str
    ) -> inference_pb2.ExtractResponse:
        await self._enter("extract", request, timeout_s, request_id)
        response = inference_pb2.ExtractResponse(
            model=canonical_model(request.model), worker_id=self.worker_id, request_id=request_id
        )
        for item in request.items:
            out = response.items.add(id=item.id)
            for entity in fake_entities(item.text, request.labels):
                out.entities.add(**entity)
            if request.labels:
                out.classifications.add(label=request.labels[0], score=0.75)
        return response

    async def cluster_health(self) -> cluster_pb2.ClusterHealth:
        self.health_reads += 1
        healthy = [worker for worker in self.workers if worker.healthy]
        timestamp = timestamp_pb2.Timestamp()
        timestamp.FromSeconds(1_700_000_000)
        health = cluster_pb2.ClusterHealth(
            status="healthy" if healthy else "no_workers",
            timestamp=timestamp,
            worker_count=len(healthy),
            gpu_count=len(healthy),
            models_loaded=sorted({model for worker in healthy for model in worker.models}),
            configured_gpu_types=sorted({worker.machine_profile for worker in self.workers}),
            live_gpu_types=sorted({worker.machine_profile for worker in healthy}),
            router_id="fake-router",
            config_epoch=self.config_epoch,
            store_connected=self.store_connected,
            config_deltas=[
                cluster_pb2.EventCount(kind=kind, result=result, count=count)
                for (kind, result), count in self.config_deltas.items()
            ],
            pool_events=[
                cluster_pb2.EventCount(kind=event, count=count) for event, count in self.pool_events.items()
            ],
        )
        for worker in self.workers:
            status = registry_pb2.WorkerStatus(
                ready=worker.healthy,
                bundle=worker.bundle,
                machine_profile=worker.machine_profile,
                pool=worker.pool,
                gpu_count=1,
            )
            for index, model in enumerate(worker.models):
                status.models.add(
                    name=model,
                    state=registry_pb2.MODEL_STATE_LOADED,
                    queue_depth=worker.queue_depth if index == 0 else 0,
                )
            health.workers.add(
                worker_id=worker.worker_id,
                router_id="fake-router",
                backend="fake",
                healthy=worker.healthy,
                status=status,
            )
        health.models.extend(self._model_summaries())
        return health

    async def list_models(self) -> cluster_pb2.ListModelsResponse:
        return cluster_pb2.ListModelsResponse(models=self._model_summaries())

    async def get_model(self, model: str) -> cluster_pb2.ModelSummary:
        wanted = canonical_model(model)
        for summary in self._model_summaries():
            if summary.name == wanted:
                return summary
        raise MeshError(ErrorCode.MODEL_NOT_FOUND, f"model {model!r} is not configured")

    def ready(self) -> bool:
        return self.is_ready

    async def pending_demand(self) -> list[cluster_pb2.PendingDemand]:
        return list(self.pending)

    # -- behaviour ---------------------------------------------------------

    def _model_summaries(self) -> list[cluster_pb2.ModelSummary]:
        summaries = []
        for model in self.models:
            holders = [worker for worker in self.workers if worker.healthy and model in worker.models]
            summaries.append(
                cluster_pb2.ModelSummary(
                    name=model,
                    state="loaded" if holders else "available",
                    worker_count=len(holders),
                    gpu_types=sorted({worker.machine_profile for worker in holders}),
                    total_queue_depth=sum(worker.queue_depth for worker in holders),
                    workers=[worker.worker_id for worker in holders],
                    bundles=["default"],
                    profiles=["default"],
                )
            )
        return summaries

    async def _enter(self, method: str, request: Any, timeout_s: float, request_id: str) -> None:
        call = RecordedCall(method, request, timeout_s, request_id)
        self.calls.append(call)
        if self.started is not None:
            self.started.set()
        if self.hang:
            try:
                await asyncio.wait_for(asyncio.Event().wait(), timeout_s)
            except asyncio.CancelledError:
                self.cancelled.append(call)
                raise
            except TimeoutError:
                self.timed_out.append(call)
                raise MeshError(
                    ErrorCode.DEADLINE_EXCEEDED, f"no answer within the request's {timeout_s:g} s"
                ) from None
        if self.errors:
            raise self.errors.pop(0)
        if self.error is not None:
            raise self.error
        if canonical_model(request.model) not in self.models:
            raise MeshError(ErrorCode.MODEL_NOT_FOUND, f"model {request.model!r} is not configured")
        if self.provisioning_until is not None and self.clock() < self.provisioning_until:
            profile = request.target.machine_profile or "l4"
            raise MeshError(
                ErrorCode.PROVISIONING,
                f"No worker available for GPU type '{profile}'. Provisioning in progress.",
                retry_after_s=1.0,
                machine_profile=profile,
                bundle="default",
                estimated_wait_s=5.0,
            )
