"""What a front end (the HTTP facade, a gRPC servicer) needs from a mesh.

Two implementations: the router itself (in-process, no hop) and a gRPC client
that talks to router replicas. Both raise `mesh.errors.MeshError` for every
failure a caller should see; cancelling the awaiting task cancels the work on
the worker.

Every inference call answers, or raises DEADLINE_EXCEEDED, within its
`timeout_s`: the router's dispatcher holds each task to the deadline (noticed
within 5 ms of it) and the gRPC client sets it as the call's deadline. A
caller therefore needs no timer of its own (the facade keeps none; one per
request is measurable at load).

Request and response payloads stay protobuf messages here on purpose: they
pass through the mesh opaque, from the edge that parsed them to the worker
that runs them, and converting them to anything else would only cost time.
"""

from __future__ import annotations

from typing import Protocol

from mesh.v1 import cluster_pb2, inference_pb2


class MeshService(Protocol):
    async def encode(
        self, request: inference_pb2.EncodeRequest, *, timeout_s: float, request_id: str
    ) -> inference_pb2.EncodeResponse: ...

    async def score(
        self, request: inference_pb2.ScoreRequest, *, timeout_s: float, request_id: str
    ) -> inference_pb2.ScoreResponse: ...

    async def extract(
        self, request: inference_pb2.ExtractRequest, *, timeout_s: float, request_id: str
    ) -> inference_pb2.ExtractResponse: ...

    async def cluster_health(self) -> cluster_pb2.ClusterHealth: ...

    async def pending_demand(self) -> list[cluster_pb2.PendingDemand]:
        """Requests that found no capacity, per (machine profile, bundle, pool): autoscaler input."""
        ...

    async def list_models(self) -> cluster_pb2.ListModelsResponse: ...

    async def get_model(self, model: str) -> cluster_pb2.ModelSummary:
        """Raises MeshError(MODEL_NOT_FOUND) for a model no bundle knows."""
        ...

    def ready(self) -> bool:
        """True while this mesh can take requests (a router is reachable)."""
        ...
