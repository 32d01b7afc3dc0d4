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

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self, TypeVar

from mesh.pools.api import PoolCreated
from mesh.pools.records import Pool
from mesh.pools.spec import PoolSpec
from mesh.pools.wire import pool_from_proto, spec_to_proto
from mesh.replica_channels import ReplicaAddresses, ReplicaChannels
from mesh.v1 import pools_pb2, pools_pb2_grpc

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class GrpcPoolsClient:
    """`PoolsApi` over gRPC. `async with GrpcPoolsClient([...]) as pools:`, or `start()` / `close()`."""

    def __init__(self, addresses: Sequence[str] | ReplicaAddresses, *, timeout_s: float = 10.0) -> None:
        """
        addresses: router replicas, HOST:PORT each, or a discovery that follows them.
        timeout_s: budget of one pool operation, failovers included.
        """
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._replicas = ReplicaChannels(addresses, pools_pb2_grpc.PoolsStub, service="pools")
        self._timeout_s = timeout_s

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
        self, method: Callable[[pools_pb2_grpc.PoolsStub], Callable[..., Awaitable[_T]]], request: Any
    ) -> _T:
        return await self._replicas.call(method, request, self._timeout_s)

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
