"""`Inference`: Encode, Score and Extract for gRPC callers."""

from __future__ import annotations

import uuid

import grpc

from mesh.api import MeshService
from mesh.errors import MeshError
from mesh.v1 import inference_pb2_grpc

REQUEST_ID_KEY = "x-request-id"


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex


async def abort_with(context: grpc.aio.ServicerContext, error: MeshError):
    await context.abort_with_status(error.to_grpc_status())


class InferenceService(inference_pb2_grpc.InferenceServicer):
    def __init__(self, mesh: MeshService) -> None:
        self._mesh = mesh

    async def Encode(self, request, context):
        try:
            return await self._mesh.encode(
                request, timeout_s=context.time_remaining(), request_id=request_id_of(context)
            )
        except MeshError as error:
            await abort_with(context, error)

    async def Score(self, request, context):
        try:
            return await self._mesh.score(
                request, timeout_s=context.time_remaining(), request_id=request_id_of(context)
            )
        except MeshError as error:
            await abort_with(context, error)

    async def Extract(self, request, context):
        try:
            return await self._mesh.extract(
                request, timeout_s=context.time_remaining(), request_id=request_id_of(context)
            )
        except MeshError as error:
            await abort_with(context, error)
