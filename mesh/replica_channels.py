"""Calls to whichever router replica answers: the failover every remote client shares.

One channel per replica. A call goes to the next replica in turn and moves
on to another only when one failed before answering: UNAVAILABLE without a
mesh ErrorDetail, the transport's verdict rather than the router's (a
router's own UNAVAILABLE, PROVISIONING say, carries a detail and is final
here). Python gRPC does not propagate deadlines, so every call carries
`timeout=` and a retry on another replica gets only what is left of it.

Callers must only send operations that are safe to run twice: a call that
died with its connection may have run before it died.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Self, TypeVar

import grpc
import grpc.aio

from mesh.errors import STATUS_DETAILS_KEY, ErrorCode, MeshError, from_rpc_error

log = logging.getLogger(__name__)

StubT = TypeVar("StubT")
ReplyT = TypeVar("ReplyT")


def failed_before_answer(error: grpc.aio.AioRpcError) -> bool:
    """True when the transport, not a router, failed the call (safe to try another replica)."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return not any(key == STATUS_DETAILS_KEY for key, _ in error.trailing_metadata() or ())


class ReplicaChannels(Generic[StubT]):
    """Stubs of one gRPC service on every replica, with failover between them."""

    def __init__(
        self,
        addresses: Sequence[str],
        stub_factory: Callable[[grpc.aio.Channel], StubT],
        *,
        service: str,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """
        addresses: router replicas, HOST:PORT each.
        stub_factory: the generated stub class of the service.
        service: what the calls are, for messages ("pools", "config").
        options: channel options beyond disabling gRPC's own retries.
        """
        if not addresses:
            raise ValueError(f"the {service} client needs at least one router address")
        self._addresses = list(addresses)
        self._stub_factory = stub_factory
        self._service = service
        # Retries are ours, to another replica; gRPC's own would retry the same one.
        self._options = [*options, ("grpc.enable_retries", 0)]
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[StubT] = []
        self._turn = itertools.count()

    async def start(self) -> None:
        if self._channels:
            return
        self._channels = [grpc.aio.insecure_channel(a, options=self._options) for a in self._addresses]
        self._stubs = [self._stub_factory(channel) for channel in self._channels]

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

    async def call(
        self, method: Callable[[StubT], Callable[..., Awaitable[ReplyT]]], request: Any, timeout_s: float
    ) -> ReplyT:
        """Run `method(stub)(request)` on the replicas in turn until one answers; MeshError otherwise."""
        if not self._stubs:
            raise MeshError(ErrorCode.NOT_READY, f"the {self._service} client is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        start = next(self._turn) % len(self._stubs)
        order = [*range(start, len(self._stubs)), *range(start)]
        last_error: grpc.aio.AioRpcError | None = None
        for index in order:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                return await method(self._stubs[index])(request, timeout=remaining)
            except grpc.aio.AioRpcError as error:
                if not failed_before_answer(error):
                    raise from_rpc_error(error) from None
                last_error = error
                log.warning("router %s failed before answering: %s", self._addresses[index], error.details())
        if last_error is None:
            raise MeshError(
                ErrorCode.DEADLINE_EXCEEDED,
                f"no router answered the {self._service} call within {timeout_s:g} s",
            )
        raise MeshError(ErrorCode.NOT_READY, f"no router replica answered: {last_error.details()}")
