"""`mesh.v1.Pools` on the router: a thin edge over a `PoolsApi` (normally `PoolService`)."""

from __future__ import annotations

import asyncio

import grpc

from mesh.errors import ErrorCode, MeshError
from mesh.pools.api import PoolsApi
from mesh.pools.wire import pool_to_proto, spec_from_proto
from mesh.v1 import pools_pb2, pools_pb2_grpc


async def _abort(context: grpc.aio.ServicerContext, error: MeshError) -> None:
    await context.abort_with_status(error.to_grpc_status())


class PoolsServicer(pools_pb2_grpc.PoolsServicer):
    def __init__(self, pools: PoolsApi, *, deadline_s: float = 10.0) -> None:
        """`deadline_s`: longest a call may take when its caller set no deadline of its own."""
        self._pools = pools
        self._deadline_s = deadline_s

    async def _run(self, context: grpc.aio.ServicerContext, call):
        # gRPC does not propagate deadlines: bound the work by the caller's remaining time.
        remaining = context.time_remaining()
        budget_s = self._deadline_s if remaining is None else max(0.0, min(remaining, self._deadline_s))
        try:
            async with asyncio.timeout(budget_s):
                return await call()
        except MeshError as error:
            await _abort(context, error)
        except TimeoutError:
            await _abort(
                context, MeshError(ErrorCode.DEADLINE_EXCEEDED, "pool operation ran past its deadline")
            )

    async def CreatePool(self, request, context):
        async def call():
            created = await self._pools.create_pool(spec_from_proto(request.spec))
            return pools_pb2.CreatePoolResponse(pool=pool_to_proto(created.pool), created=created.created)

        return await self._run(context, call)

    async def GetPool(self, request, context):
        async def call():
            return pools_pb2.GetPoolResponse(pool=pool_to_proto(await self._pools.get_pool(request.name)))

        return await self._run(context, call)

    async def RenewPool(self, request, context):
        async def call():
            await self._pools.renew_pool(request.name)
            return pools_pb2.RenewPoolResponse(message="Pool renewed")

        return await self._run(context, call)

    async def DeletePool(self, request, context):
        async def call():
            await self._pools.delete_pool(request.name)
            return pools_pb2.DeletePoolResponse(message="Pool deleted")

        return await self._run(context, call)

    async def ListPools(self, request, context):
        async def call():
            return pools_pb2.ListPoolsResponse(
                pools=[pool_to_proto(p) for p in await self._pools.list_pools()]
            )

        return await self._run(context, call)


def add_pools_servicer(pools: PoolsApi, server: grpc.aio.Server) -> None:
    pools_pb2_grpc.add_PoolsServicer_to_server(PoolsServicer(pools), server)
