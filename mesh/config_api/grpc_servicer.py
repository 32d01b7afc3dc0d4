"""`mesh.v1.Config` served by the router: a thin edge over a `ConfigApi`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from mesh.config_api import wire
from mesh.config_api.api import ConfigApi
from mesh.errors import HTTP_ONLY_CODES, MeshError
from mesh.v1 import config_pb2_grpc

T = TypeVar("T")


async def abort_with(context: grpc.aio.ServicerContext, error: MeshError) -> None:
    if error.code in HTTP_ONLY_CODES:
        # mesh.v1.ErrorCode has no value for these; a bare status lets the
        # client's from_rpc_error map it back (NOT_FOUND -> NOT_FOUND, 404).
        await context.abort(error.spec.grpc_status, error.message)
    await context.abort_with_status(error.to_grpc_status())


class ConfigServicer(config_pb2_grpc.ConfigServicer):
    def __init__(self, api: ConfigApi) -> None:
        self._api = api

    async def _answer(
        self, context: grpc.aio.ServicerContext, call: Awaitable[T], to_proto: Callable[[T], Any]
    ) -> Any:
        try:
            return to_proto(await call)
        except MeshError as error:
            await abort_with(context, error)

    async def AddModelConfig(self, request, context):
        # No content type on this wire: YAML, which reads JSON too. A remote
        # facade converts a JSON body to YAML before sending it.
        return await self._answer(
            context,
            self._api.add_model_config(request.document, idempotency_key=request.idempotency_key),
            wire.add_reply_to_proto,
        )

    async def ListModelConfigs(self, request, context):
        return await self._answer(context, self._api.list_models(), wire.models_to_proto)

    async def GetModelConfig(self, request, context):
        return await self._answer(
            context, self._api.get_model(request.model_id), wire.model_document_to_proto
        )

    async def GetModelConfigStatus(self, request, context):
        return await self._answer(context, self._api.model_status(request.model_id), wire.status_to_proto)

    async def ListBundles(self, request, context):
        return await self._answer(context, self._api.list_bundles(), wire.bundles_to_proto)

    async def GetBundle(self, request, context):
        return await self._answer(
            context, self._api.get_bundle(request.bundle_id), wire.bundle_document_to_proto
        )

    async def Resolve(self, request, context):
        return await self._answer(context, self._api.resolve(request.model), wire.resolve_to_proto)

    async def GetEpoch(self, request, context):
        return await self._answer(context, self._api.epoch(), wire.epoch_to_proto)

    async def Export(self, request, context):
        return await self._answer(context, self._api.export(), wire.export_to_proto)


def add_config_servicer(api: ConfigApi, server: grpc.aio.Server) -> None:
    """Register mesh.v1.Config on `server`."""
    config_pb2_grpc.add_ConfigServicer_to_server(ConfigServicer(api), server)


__all__ = ["ConfigServicer", "add_config_servicer"]
