"""The one interface every backend implements, and the plain types it speaks.

A backend runs models; the agent owns everything else (queueing, batching,
deadlines, status). The agent hands a backend whole batches: every request in
one call shares a model, a profile, an operation and a LoRA adapter, and the
backend answers each request on its own, so one bad request never fails its
neighbours.

Models are the catalog's `mesh.catalog.ModelConfig` (plain frozen data).
Requests and responses stay protobuf messages (`inference_pb2`): they pass
through the agent opaque, from the router's Task to the TaskResult, and
converting them would only cost time on the hot path. The agent fills in
`model`, `worker_id` and `timing` of each response; a backend fills the rest.

Errors are `mesh.errors.MeshError`:
- from `load`: MODEL_LOAD_FAILED when the model can never load here (no
  weights, bad config), RESOURCE_EXHAUSTED when it does not fit now;
- from `encode` / `score` / `extract`: raise to fail the whole batch (out of
  memory, a crashed runtime); put a MeshError in a request's slot of the
  returned list to fail only that request (bad input, unsupported output).
Any other exception is a bug and fails the batch as INTERNAL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

from mesh.catalog import ModelConfig
from mesh.errors import MeshError
from mesh.v1 import inference_pb2


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """What a backend reports about a model it has loaded."""

    model_id: str
    memory_bytes: int = 0
    """Memory the weights take (host or device); 0 when unknown."""
    dims: int = 0
    """Dense output dimensions; 0 when the model has no dense output."""


@dataclass(frozen=True, slots=True)
class BatchTarget:
    """What every request of one batch shares."""

    model_id: str
    profile: str
    """Profile name the batch runs under ("" means the model's default)."""
    lora: str = ""
    """LoRA adapter name; "" for the base model."""


EncodeOutcome: TypeAlias = inference_pb2.EncodeResponse | MeshError
ScoreOutcome: TypeAlias = inference_pb2.ScoreResponse | MeshError
ExtractOutcome: TypeAlias = inference_pb2.ExtractResponse | MeshError


@runtime_checkable
class Backend(Protocol):
    """Runs models for the agent. Implementations must be safe to call from one event loop.

    Calls for different batches may overlap (the agent can run more than one
    batch at a time); a backend that cannot run them concurrently serialises
    them itself. Blocking work (a forward pass) belongs in a thread, never on
    the event loop.
    """

    name: str
    """Registry name, reported to routers in Hello (`fake`, `sentence-transformers`)."""

    async def load(self, model: ModelConfig) -> LoadedModel:
        """Load a model's weights. Idempotent; raises MeshError as the module says.

        `model` is the catalog's config restricted to the profiles this
        worker's bundle serves; the profiles' `loadtime` options apply here.
        """
        ...

    async def unload(self, model_id: str) -> None:
        """Free a model's weights. Unknown or unloaded ids are ignored."""
        ...

    async def encode(
        self, target: BatchTarget, requests: Sequence[inference_pb2.EncodeRequest]
    ) -> Sequence[EncodeOutcome]:
        """Encode every item of every request; one outcome per request, in order."""
        ...

    async def score(
        self, target: BatchTarget, requests: Sequence[inference_pb2.ScoreRequest]
    ) -> Sequence[ScoreOutcome]:
        """Score each request's items against its query, best first with rank 0 the best."""
        ...

    async def extract(
        self, target: BatchTarget, requests: Sequence[inference_pb2.ExtractRequest]
    ) -> Sequence[ExtractOutcome]:
        """Extract entities (and whatever else the model finds) from every item."""
        ...

    async def close(self) -> None:
        """Unload everything and release threads. The backend is unusable afterwards."""
        ...
