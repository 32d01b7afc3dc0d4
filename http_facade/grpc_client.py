"""GrpcMeshClient: MeshService over the mesh.v1 gRPC API of router replicas.

The facade's remote mode (`mesh facade --router a:50051,b:50051`). It keeps a
channel to every replica, watches each one's gRPC health, sends a request to
a ready replica (round robin) and moves on to the next one when a replica
fails before answering. Inference is idempotent, so a request that died with
the connection may run again elsewhere.

"Failed before answering" means UNAVAILABLE without a mesh ErrorDetail: the
transport's verdict. A router's own UNAVAILABLE (PROVISIONING, MODEL_LOADING,
...) always carries a detail and goes back to the caller as that MeshError.

Python gRPC does not propagate deadlines, so every call passes `timeout=`
from what is left of the request's budget; a retry on another replica only
gets the remainder.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.errors import ErrorCode, MeshError, from_rpc_error
from mesh.replica_channels import failed_before_answer
from mesh.v1 import cluster_pb2, cluster_pb2_grpc, inference_pb2, inference_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

# The key mesh.services.inference reads, so router logs carry the facade's id.
REQUEST_ID_METADATA_KEY = "x-request-id"
INFERENCE_HEALTH_SERVICE = "mesh.v1.Inference"


def parse_router_address(text: str) -> str:
    """`host:port` or `[v6]:port`, checked; raises ValueError saying what is wrong."""
    address = text.strip()
    host, sep, port = address.rpartition(":")
    if not sep or not host or host in ("[]",):
        raise ValueError(f"router address {text!r} is not HOST:PORT")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"router address {text!r} has an unbalanced IPv6 bracket")
    if ":" in host and not host.startswith("["):
        raise ValueError(f"router address {text!r}: write IPv6 hosts as [addr]:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"router address {text!r} has no valid port (1-65535)")
    return address


def parse_router_addresses(text: str) -> list[str]:
    """`a:1,b:2` -> ["a:1", "b:2"]; ValueError on an empty list or a bad entry."""
    addresses = [parse_router_address(part) for part in text.split(",") if part.strip()]
    if not addresses:
        raise ValueError("no router address given")
    return addresses


class _Replica:
    __slots__ = ("address", "channel", "cluster", "health", "health_service", "inference", "ready")

    def __init__(self, address: str, options: Sequence[tuple[str, Any]], health_service: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=options)
        self.inference = inference_pb2_grpc.InferenceStub(self.channel)
        self.cluster = cluster_pb2_grpc.ClusterStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.ready = False
        self.health_service = health_service


class GrpcMeshClient:
    """MeshService backed by router replicas over gRPC.

    Use as `async with GrpcMeshClient([...]) as mesh:` (or `await start()` /
    `await close()`): channels and health watchers live between the two.
    """

    def __init__(
        self,
        addresses: Sequence[str],
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
        addresses: router replicas, HOST:PORT each.
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
        if not addresses:
            raise ValueError("GrpcMeshClient needs at least one router address")
        self._addresses = [parse_router_address(address) for address in addresses]
        self._read_timeout_s = read_timeout_s
        self._health_interval_s = health_interval_s
        self._health_timeout_s = health_timeout_s
        self._health_service = health_service
        self._options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 0),
            # Retries are ours (to another replica); gRPC's own would retry the same one.
            ("grpc.enable_retries", 0),
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ]
        self._replicas: list[_Replica] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._turn = itertools.count()

    @property
    def addresses(self) -> list[str]:
        return list(self._addresses)

    async def start(self) -> None:
        if self._replicas:
            return
        self._replicas = [
            _Replica(address, self._options, self._health_service) for address in self._addresses
        ]
        # One first probe of every replica before returning, so ready() means
        # something as soon as the facade starts serving.
        await asyncio.gather(*(self._probe(replica) for replica in self._replicas))
        self._watchers = [
            asyncio.create_task(self._watch(replica), name=f"router-health-{replica.address}")
            for replica in self._replicas
        ]

    async def close(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        for watcher in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        self._watchers = []
        replicas, self._replicas = self._replicas, []
        await asyncio.gather(*(replica.channel.close(grace=None) for replica in replicas))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- health ------------------------------------------------------------

    async def _watch(self, replica: _Replica) -> None:
        while True:
            await asyncio.sleep(self._health_interval_s)
            await self._probe(replica)

    async def _probe(self, replica: _Replica) -> None:
        was_ready = replica.ready
        replica.ready = await self._check(replica)
        if replica.ready != was_ready:
            log.info("router %s is %s", replica.address, "ready" if replica.ready else "not ready")

    async def _check(self, replica: _Replica) -> bool:
        try:
            reply = await replica.health.Check(
                health_pb2.HealthCheckRequest(service=replica.health_service), timeout=self._health_timeout_s
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND and replica.health_service:
                # This router does not register per-service readiness.
                replica.health_service = ""
                return await self._check(replica)
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                # No health service at all: a live connection is the best we know.
                return replica.channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def ready(self) -> bool:
        return any(replica.ready for replica in self._replicas)

    def _candidates(self) -> list[_Replica]:
        """Ready replicas in round-robin order, then the rest (health may lag)."""
        replicas = self._replicas
        if not replicas:
            raise MeshError(ErrorCode.NOT_READY, "the gRPC mesh client is not started")
        start = next(self._turn) % len(replicas)
        rotated = replicas[start:] + replicas[:start]
        return [r for r in rotated if r.ready] + [r for r in rotated if not r.ready]

    # -- calls -------------------------------------------------------------

    async def _call(
        self,
        method: Callable[[_Replica], Callable[..., Awaitable[T]]],
        request: Any,
        timeout_s: float,
        request_id: str = "",
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        metadata = ((REQUEST_ID_METADATA_KEY, request_id),) if request_id else None
        last_error: grpc.aio.AioRpcError | None = None
        for replica in self._candidates():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                reply = await method(replica)(request, timeout=remaining, metadata=metadata)
            except grpc.aio.AioRpcError as error:
                if failed_before_answer(error):
                    replica.ready = False
                    last_error = error
                    log.warning("router %s failed before answering: %s", replica.address, error.details())
                    continue
                raise from_rpc_error(error) from None
            replica.ready = True
            return reply
        if last_error is None:
            raise MeshError(ErrorCode.DEADLINE_EXCEEDED, f"request budget of {timeout_s:g} s spent")
        raise MeshError(ErrorCode.NOT_READY, f"no router replica answered: {last_error.details()}")

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
