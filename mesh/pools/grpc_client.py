"""`GrpcPoolsClient`: the `PoolsApi` of router replicas over `mesh.v1.Pools`.

For a facade running as its own process. Every replica answers the same
(pools live in the shared store), so a call goes to the next replica in
turn and moves on only when one failed before answering: UNAVAILABLE
without a mesh ErrorDetail, the transport's verdict. Every pool call is
idempotent (create renews, renew and delete are keyed by name), so a call
that died with its connection may run again elsewhere. Each call carries
`timeout=` from the operation's budget, since gRPC does not propagate
deadlines.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self, TypeVar

import grpc
import grpc.aio

from mesh.errors import STATUS_DETAILS_KEY, ErrorCode, MeshError, from_rpc_error
from mesh.pools.api import PoolCreated
from mesh.pools.records import Pool
from mesh.pools.spec import PoolSpec
from mesh.pools.wire import pool_from_proto, spec_to_proto
from mesh.v1 import pools_pb2, pools_pb2_grpc

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def _failed_before_answer(error: grpc.aio.AioRpcError) -> bool:
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return not any(key == STATUS_DETAILS_KEY for key, _ in error.trailing_metadata() or ())


class GrpcPoolsClient:
    """`PoolsApi` over gRPC. `async with GrpcPoolsClient([...]) as pools:`, or `start()` / `close()`."""

    def __init__(self, addresses: Sequence[str], *, timeout_s: float = 10.0) -> None:
        """
        addresses: router replicas, HOST:PORT each.
        timeout_s: budget of one pool operation, failovers included.
        """
        if not addresses:
            raise ValueError("GrpcPoolsClient needs at least one router address")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._addresses = list(addresses)
        self._timeout_s = timeout_s
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[pools_pb2_grpc.PoolsStub] = []
        self._turn = itertools.count()

    async def start(self) -> None:
        if self._channels:
            return
        self._channels = [
            grpc.aio.insecure_channel(address, options=[("grpc.enable_retries", 0)])
            for address in self._addresses
        ]
        self._stubs = [pools_pb2_grpc.PoolsStub(channel) for channel in self._channels]

    async def close(self) -> None:
        channels, self._channels, self._stubs = self._channels, [], []
        await asyncio.gather(*(channel.close(grace=None) for channel in channels))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(
        self, method: Callable[[pools_pb2_grpc.PoolsStub], Callable[..., Awaitable[_T]]], request: Any
    ) -> _T:
        if not self._stubs:
            raise MeshError(ErrorCode.NOT_READY, "the gRPC pools client is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
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
            raise MeshError(
                ErrorCode.DEADLINE_EXCEEDED, f"pool operation budget of {self._timeout_s:g} s spent"
            )
        raise MeshError(ErrorCode.NOT_READY, f"no router replica answered: {last_error.details()}")

    async def create_pool(self, spec: PoolSpec) -> PoolCreated:
        reply = await self._call(
            lambda s: s.CreatePool, pools_pb2.CreatePoolRequest(spec=spec_to_proto(spec))
        )
        return PoolCreated(pool_from_proto(reply.pool), reply.created)

    async def get_pool(self, name: str) -> Pool:
        reply = await self._call(lambda s: s.GetPool, pools_pb2.GetPoolRequest(name=name))
        return pool_from_proto(reply.pool)

    async def renew_pool(self, name: str) -> None:
        await self._call(lambda s: s.RenewPool, pools_pb2.RenewPoolRequest(name=name))

    async def delete_pool(self, name: str) -> None:
        await self._call(lambda s: s.DeletePool, pools_pb2.DeletePoolRequest(name=name))

    async def list_pools(self) -> list[Pool]:
        reply = await self._call(lambda s: s.ListPools, pools_pb2.ListPoolsRequest())
        return [pool_from_proto(pool) for pool in reply.pools]
