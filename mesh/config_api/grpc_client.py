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

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

import grpc
import grpc.aio

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
from mesh.errors import STATUS_DETAILS_KEY, ErrorCode, MeshError, from_rpc_error
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


def _failed_before_answer(error: grpc.aio.AioRpcError) -> bool:
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return not any(key == STATUS_DETAILS_KEY for key, _ in error.trailing_metadata() or ())


class GrpcConfigClient:
    """`ConfigApi` over router replicas. Use `async with GrpcConfigClient([...]) as api:`."""

    def __init__(self, addresses: Sequence[str], config: GrpcConfigClientConfig | None = None) -> None:
        if not addresses:
            raise ValueError("GrpcConfigClient needs at least one router address")
        self._addresses = list(addresses)
        self._config = config or GrpcConfigClientConfig()
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[config_pb2_grpc.ConfigStub] = []
        self._turn = itertools.count()

    async def start(self) -> None:
        if self._channels:
            return
        options = [
            ("grpc.max_receive_message_length", self._config.max_message_bytes),
            ("grpc.max_send_message_length", self._config.max_message_bytes),
            # Retries are ours (to another replica); gRPC's own would retry the same one.
            ("grpc.enable_retries", 0),
        ]
        self._channels = [grpc.aio.insecure_channel(address, options=options) for address in self._addresses]
        self._stubs = [config_pb2_grpc.ConfigStub(channel) for channel in self._channels]

    async def close(self) -> None:
        channels, self._channels, self._stubs = self._channels, [], []
        for channel in channels:
            with contextlib.suppress(Exception):
                await channel.close(grace=None)

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
        if not self._stubs:
            raise MeshError(ErrorCode.NOT_READY, "the Config API client is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        start = next(self._turn) % len(self._stubs)
        order = list(range(start, len(self._stubs))) + list(range(start))
        last_error: grpc.aio.AioRpcError | None = None
        for index in order:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                return await method(self._stubs[index])(request, timeout=remaining)
            except grpc.aio.AioRpcError as error:
                if not _failed_before_answer(error):
                    raise from_rpc_error(error) from None
                last_error = error
                log.warning("router %s failed before answering: %s", self._addresses[index], error.details())
        if last_error is None:
            raise MeshError(ErrorCode.DEADLINE_EXCEEDED, f"no router answered within {timeout_s:g} s")
        raise MeshError(ErrorCode.NOT_READY, f"no router replica answered: {last_error.details()}")

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
