"""GrpcMeshClient: MeshService over the mesh.v1 gRPC API of router replicas.

The facade's remote mode (`mesh facade --router ...`). It keeps a channel to
every replica -- a fixed list, or the set a `mesh.ha.RouterDiscovery`
follows (DNS names, etcd), shared with the facade's Config and Pools clients
-- watches each one's gRPC health, sends a request to a ready replica (round
robin) and moves on to the next one when a replica fails before answering.
Inference is idempotent, so a request that died with the connection may run
again elsewhere. The channel work, health and failover are
`mesh.replica_channels.ReplicaChannels`.

"Failed before answering" means UNAVAILABLE without a mesh ErrorDetail: the
transport's verdict. A router's own UNAVAILABLE (PROVISIONING, MODEL_LOADING,
...) always carries a detail and goes back to the caller as that MeshError.

Python gRPC does not propagate deadlines, so every call passes `timeout=`
from what is left of the request's budget; a retry on another replica only
gets the remainder.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self, TypeVar

import grpc.aio

from mesh.replica_channels import HealthWatch, ReplicaAddresses, ReplicaChannels
from mesh.v1 import cluster_pb2, cluster_pb2_grpc, inference_pb2, inference_pb2_grpc

T = TypeVar("T")

# The key mesh.services.inference reads, so router logs carry the facade's id.
REQUEST_ID_METADATA_KEY = "x-request-id"
INFERENCE_HEALTH_SERVICE = "mesh.v1.Inference"


class _RouterStubs:
    """The services the facade calls on one router, over its channel."""

    __slots__ = ("cluster", "inference")

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.inference = inference_pb2_grpc.InferenceStub(channel)
        self.cluster = cluster_pb2_grpc.ClusterStub(channel)


class GrpcMeshClient:
    """MeshService backed by router replicas over gRPC.

    Use as `async with GrpcMeshClient([...]) as mesh:` (or `await start()` /
    `await close()`): channels and health watchers live between the two.
    """

    def __init__(
        self,
        routers: Sequence[str] | ReplicaAddresses,
        *,
        read_timeout_s: float = 5.0,
        health_interval_s: float = 1.0,
        health_timeout_s: float = 1.0,
        health_service: str = INFERENCE_HEALTH_SERVICE,
        max_message_bytes: int = 64 * 1024 * 1024,
        keepalive_time_s: float = 30.0,
        keepalive_timeout_s: float = 10.0,
    ) -> None:
        """
        routers: router replicas, HOST:PORT each; or a `mesh.ha.RouterDiscovery` (any
            `ReplicaAddresses`) whose set the client follows: a replica per address,
            added and retired as the set changes. Its owner runs it.
        read_timeout_s: deadline of cluster reads (health, models).
        health_interval_s / health_timeout_s: period and deadline of each replica's health check.
        health_service: the grpc.health.v1 service whose SERVING means "takes inference";
            replicas that do not know it are asked about "" (the server as a whole).
        max_message_bytes: largest message either way (a 1000-item batch of 4096-d
            float32 vectors is 16 MiB; gRPC's default is 4).
        keepalive_time_s / keepalive_timeout_s: HTTP/2 pings while calls are open, so a
            dead replica is noticed mid-call; the router's server must permit pings
            this often (grpc.http2.min_ping_interval_without_data_ms).
        """
        self._read_timeout_s = read_timeout_s
        self._replicas = ReplicaChannels(
            routers,
            _RouterStubs,
            service="mesh",
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
                ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
                ("grpc.keepalive_permit_without_calls", 0),
                ("grpc.initial_reconnect_backoff_ms", 250),
                ("grpc.max_reconnect_backoff_ms", 5000),
            ],
            health=HealthWatch(health_service, interval_s=health_interval_s, timeout_s=health_timeout_s),
        )

    @property
    def addresses(self) -> list[str]:
        """Replicas the client sends to now."""
        return self._replicas.addresses

    @property
    def retiring(self) -> list[str]:
        """Replicas that left the set and still finish calls (their channels close after)."""
        return self._replicas.retiring

    async def start(self) -> None:
        """Open the channels; returns once every replica known now has been health-checked once."""
        await self._replicas.start()

    async def close(self) -> None:
        await self._replicas.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def ready(self) -> bool:
        """Whether some replica in the set passes its health check (what /readyz reports)."""
        return self._replicas.ready()

    # -- calls -------------------------------------------------------------

    async def _call(
        self,
        method: Callable[[_RouterStubs], Callable[..., Awaitable[T]]],
        request: Any,
        timeout_s: float,
        request_id: str = "",
    ) -> T:
        metadata = ((REQUEST_ID_METADATA_KEY, request_id),) if request_id else None
        return await self._replicas.call(method, request, timeout_s, metadata=metadata)

    async def encode(
        self, request: inference_pb2.EncodeRequest, *, timeout_s: float, request_id: str
    ) -> inference_pb2.EncodeResponse:
        return await self._call(lambda r: r.inference.Encode, request, timeout_s, request_id)

    async def score(
        self, request: inference_pb2.ScoreRequest, *, timeout_s: float, request_id: str
    ) -> inference_pb2.ScoreResponse:
        return await self._call(lambda r: r.inference.Score, request, timeout_s, request_id)

    async def extract(
        self, request: inference_pb2.ExtractRequest, *, timeout_s: float, request_id: str
    ) -> inference_pb2.ExtractResponse:
        return await self._call(lambda r: r.inference.Extract, request, timeout_s, request_id)

    async def cluster_health(self) -> cluster_pb2.ClusterHealth:
        reply = await self._call(
            lambda r: r.cluster.GetHealth, cluster_pb2.GetHealthRequest(), self._read_timeout_s
        )
        return reply.health

    async def list_models(self) -> cluster_pb2.ListModelsResponse:
        return await self._call(
            lambda r: r.cluster.ListModels, cluster_pb2.ListModelsRequest(), self._read_timeout_s
        )

    async def get_model(self, model: str) -> cluster_pb2.ModelSummary:
        reply = await self._call(
            lambda r: r.cluster.GetModel, cluster_pb2.GetModelRequest(model=model), self._read_timeout_s
        )
        return reply.model

    async def pending_demand(self) -> list[cluster_pb2.PendingDemand]:
        reply = await self._call(
            lambda r: r.cluster.GetPendingDemand, cluster_pb2.GetPendingDemandRequest(), self._read_timeout_s
        )
        return list(reply.demand)
