"""`GrpcConfigClient`: the Config API over mesh.v1.Config, for a facade in its own process.

One channel per router replica; each call goes to the next replica in turn
and moves on to another one when a replica failed before answering
(UNAVAILABLE without a mesh ErrorDetail: the transport's verdict, not the
router's). That is safe for writes too: a model write is append-only, so a
write that did land and is sent again answers 200 instead of 201.

Python gRPC does not propagate deadlines: every call carries `timeout=`,
and a retry on another replica only gets what is left of it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from mesh.config_api import wire
from mesh.config_api.api import (
    AddModelReply,
    BundleDocumentReply,
    BundleListing,
    EpochReply,
    ExportReply,
    ModelAckStatus,
    ModelDocumentReply,
    ModelListing,
    ResolveReply,
)
from mesh.config_api.document_intake import IntakeLimits, admit_document
from mesh.replica_channels import ReplicaAddresses, ReplicaChannels
from mesh.v1 import config_pb2, config_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class GrpcConfigClientConfig:
    """Deadlines and channel options of the remote Config API."""

    read_timeout_s: float = 5.0
    """Deadline of a read, all replicas tried included."""
    write_timeout_s: float = 15.0
    """Deadline of a write: the router's compare-and-swap plus its ACK wait (3 s) plus headroom."""
    max_message_bytes: int = 16 * 1024 * 1024
    """Largest message either way (an export of a big catalog)."""
    intake: IntakeLimits = field(default_factory=IntakeLimits)
    """Checks applied before a document is sent (the router checks again)."""

    def __post_init__(self) -> None:
        if not (self.read_timeout_s > 0 and self.write_timeout_s > 0):
            raise ValueError("timeouts must be positive")


class GrpcConfigClient:
    """`ConfigApi` over router replicas. Use `async with GrpcConfigClient([...]) as api:`."""

    def __init__(
        self, addresses: Sequence[str] | ReplicaAddresses, config: GrpcConfigClientConfig | None = None
    ) -> None:
        self._config = config or GrpcConfigClientConfig()
        self._replicas = ReplicaChannels(
            addresses,
            config_pb2_grpc.ConfigStub,
            service="Config API",
            options=[
                ("grpc.max_receive_message_length", self._config.max_message_bytes),
                ("grpc.max_send_message_length", self._config.max_message_bytes),
            ],
        )

    async def start(self) -> None:
        await self._replicas.start()

    async def close(self) -> None:
        await self._replicas.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(
        self,
        method: Callable[[config_pb2_grpc.ConfigStub], Callable[..., Awaitable[T]]],
        request: Any,
        timeout_s: float,
    ) -> T:
        return await self._replicas.call(method, request, timeout_s)

    async def _read(
        self, method: Callable[[config_pb2_grpc.ConfigStub], Callable[..., Awaitable[T]]], request: Any
    ) -> T:
        return await self._call(method, request, self._config.read_timeout_s)

    async def add_model_config(
        self, document: str, *, idempotency_key: str = "", content_type: str = ""
    ) -> AddModelReply:
        # The wire carries no content type: JSON becomes YAML here, as the router would make it.
        text = admit_document(document, content_type, self._config.intake)
        request = config_pb2.AddModelConfigRequest(document=text, idempotency_key=idempotency_key)
        reply = await self._call(lambda stub: stub.AddModelConfig, request, self._config.write_timeout_s)
        return wire.add_reply_from_proto(reply)

    async def list_models(self) -> tuple[ModelListing, ...]:
        reply = await self._read(lambda stub: stub.ListModelConfigs, config_pb2.ListModelConfigsRequest())
        return wire.models_from_proto(reply)

    async def get_model(self, model_id: str) -> ModelDocumentReply:
        reply = await self._read(
            lambda stub: stub.GetModelConfig, config_pb2.GetModelConfigRequest(model_id=model_id)
        )
        return wire.model_document_from_proto(reply)

    async def model_status(self, model_id: str) -> ModelAckStatus:
        request = config_pb2.GetModelConfigStatusRequest(model_id=model_id)
        reply = await self._read(lambda stub: stub.GetModelConfigStatus, request)
        return wire.status_from_proto(reply)

    async def list_bundles(self) -> tuple[BundleListing, ...]:
        reply = await self._read(lambda stub: stub.ListBundles, config_pb2.ListBundlesRequest())
        return wire.bundles_from_proto(reply)

    async def get_bundle(self, bundle_id: str) -> BundleDocumentReply:
        reply = await self._read(
            lambda stub: stub.GetBundle, config_pb2.GetBundleRequest(bundle_id=bundle_id)
        )
        return wire.bundle_document_from_proto(reply)

    async def resolve(self, model: str) -> ResolveReply:
        reply = await self._read(lambda stub: stub.Resolve, config_pb2.ResolveRequest(model=model))
        return wire.resolve_from_proto(reply)

    async def epoch(self) -> EpochReply:
        reply = await self._read(lambda stub: stub.GetEpoch, config_pb2.GetEpochRequest())
        return wire.epoch_from_proto(reply)

    async def export(self) -> ExportReply:
        reply = await self._read(lambda stub: stub.Export, config_pb2.ExportRequest())
        return wire.export_from_proto(reply)
