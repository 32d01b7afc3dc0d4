"""Calls to whichever router replica answers: the failover every remote client shares.

One channel per replica. The replicas are a fixed list of addresses or follow
a `ReplicaAddresses` source (`mesh.ha.RouterDiscovery`: static addresses,
`dns:///NAME:PORT`, etcd): an address that appears gets a channel -- and,
with a `HealthWatch`, a health watcher -- at once; one that leaves takes no
new call, and its channel closes once the last call on it has ended. A call
in flight there is not cut short: it finishes, or fails over as any call does.

A call goes to the replicas believed ready first, in round-robin order, then
to the rest (belief lags). It moves on to another replica only when one
failed before answering: UNAVAILABLE without a mesh ErrorDetail, the
transport's verdict rather than the router's (a router's own UNAVAILABLE,
PROVISIONING say, carries a detail and is final here). Python gRPC does not
propagate deadlines, so every call carries `timeout=` and a retry on another
replica gets only what is left of it.

Callers must only send operations that are safe to run twice: a call that
died with its connection may have run before it died.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, Self, TypeVar, runtime_checkable

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.errors import STATUS_DETAILS_KEY, ErrorCode, MeshError, from_rpc_error
from mesh.ha.discovery import check_address

log = logging.getLogger(__name__)

StubT = TypeVar("StubT")
ReplyT = TypeVar("ReplyT")


def failed_before_answer(error: grpc.aio.AioRpcError) -> bool:
    """True when the transport, not a router, failed the call (safe to try another replica)."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return not any(key == STATUS_DETAILS_KEY for key, _ in error.trailing_metadata() or ())


@runtime_checkable
class ReplicaAddresses(Protocol):
    """A set of replica addresses that changes while clients use it (`mesh.ha.RouterDiscovery`).

    Several clients may follow one source; whoever built it runs it.
    """

    @property
    def current(self) -> frozenset[str]:
        """The addresses now."""
        ...

    def subscribe(self, on_change: Callable[[frozenset[str]], None]) -> Callable[[], None]:
        """Call `on_change(addresses)` on every change; returns a function that stops it."""
        ...


@dataclass(frozen=True)
class HealthWatch:
    """How each replica's grpc.health.v1 status is polled: what `ReplicaChannels.ready` reports."""

    service: str
    """The health service whose SERVING means "takes calls"; a replica that does not
    register it is asked about "" (the server as a whole) instead."""
    interval_s: float = 1.0
    """Time between two checks of one replica."""
    timeout_s: float = 1.0
    """Deadline of one check."""

    def __post_init__(self) -> None:
        if not (self.interval_s > 0 and self.timeout_s > 0):
            raise ValueError("health interval_s and timeout_s must be positive")


class _Replica(Generic[StubT]):
    """One replica's channel, its stubs and what is known of it."""

    __slots__ = (
        "address",
        "calls",
        "channel",
        "health",
        "health_service",
        "probed",
        "ready",
        "retired",
        "stub",
        "watcher",
    )

    def __init__(
        self,
        address: str,
        stub_factory: Callable[[grpc.aio.Channel], StubT],
        options: Sequence[tuple[str, Any]],
        health: HealthWatch | None,
    ) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=options)
        self.stub = stub_factory(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.health_service = health.service if health else ""
        # Without health checks nothing is known until a call fails: assume the best.
        self.ready = health is None
        self.calls = 0
        """Calls in flight on this channel: a retired replica's channel closes when it reaches 0."""
        self.retired = False
        """Left the address set: takes no new call."""
        self.watcher: asyncio.Task[None] | None = None
        self.probed = asyncio.Event()
        """Set once the first health check has ended (or will never run)."""


class ReplicaChannels(Generic[StubT]):
    """Stubs of one gRPC service on every replica, with failover between them.

    `async with ReplicaChannels(...) as replicas:` (or `start()` / `close()`).
    """

    def __init__(
        self,
        routers: Sequence[str] | ReplicaAddresses,
        stub_factory: Callable[[grpc.aio.Channel], StubT],
        *,
        service: str,
        options: Sequence[tuple[str, Any]] = (),
        health: HealthWatch | None = None,
    ) -> None:
        """
        routers: router replicas, HOST:PORT each; or a source whose set they follow
            (shared with other clients; its owner runs it).
        stub_factory: builds the stubs the calls use from a channel (the generated stub class).
        service: what the calls are, for messages ("pools", "Config API").
        options: channel options beyond disabling gRPC's own retries.
        health: poll each replica's grpc.health.v1 status; None to learn only from calls.
        """
        if isinstance(routers, str):
            raise TypeError("routers is a list of addresses or a ReplicaAddresses, not a string")
        self._source: ReplicaAddresses | None = None
        self._static: tuple[str, ...] = ()
        if isinstance(routers, ReplicaAddresses):
            self._source = routers
        else:
            # Order kept (round robin starts from the first), duplicates dropped.
            self._static = tuple(dict.fromkeys(check_address(address.strip()) for address in routers))
            if not self._static:
                raise ValueError(f"the {service} client needs at least one router address")
        self._stub_factory = stub_factory
        self._service = service
        self._health = health
        # Retries are ours, to another replica; gRPC's own would retry the same one.
        self._options = [*options, ("grpc.enable_retries", 0)]
        self._replicas: dict[str, _Replica[StubT]] = {}
        """Replicas in the set, in the order they joined it."""
        self._retiring: dict[str, _Replica[StubT]] = {}
        """Replicas that left the set with calls still in flight."""
        self._watchers: set[asyncio.Task[None]] = set()
        """Health watchers still running, retired replicas' included (cancelled, not yet ended)."""
        self._closers: set[asyncio.Task[None]] = set()
        """Closes of retired replicas' channels."""
        self._unsubscribe: Callable[[], None] | None = None
        self._running = False
        self._turn = itertools.count()

    @property
    def addresses(self) -> list[str]:
        """Replicas in the set now."""
        return list(self._replicas)

    @property
    def retiring(self) -> list[str]:
        """Replicas that left the set and still carry calls; each channel closes after its last call."""
        return list(self._retiring)

    def ready(self) -> bool:
        """Whether some replica in the set is believed to take calls."""
        return any(replica.ready for replica in self._replicas.values())

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open a channel per replica; with health checks, return once each has been checked once."""
        if self._running:
            return
        self._running = True
        if self._source is not None:
            # No await between reading the set and subscribing: no change can slip between.
            self._unsubscribe = self._source.subscribe(self._follow)
            self._follow(self._source.current)
        else:
            self._follow(self._static)
        # ready() means something as soon as the owner starts serving. Each check
        # carries its own deadline, so this wait is bounded.
        await asyncio.gather(*(replica.probed.wait() for replica in self._replicas.values()))

    async def close(self) -> None:
        """Stop following the set and close every channel (calls still in flight on them fail)."""
        if not self._running:
            return
        self._running = False
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        replicas = [*self._replicas.values(), *self._retiring.values()]
        self._replicas.clear()
        self._retiring.clear()
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, *self._closers, return_exceptions=True)
        await asyncio.gather(
            *(replica.channel.close(grace=None) for replica in replicas), return_exceptions=True
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the set -----------------------------------------------------------------------

    def _follow(self, addresses: Iterable[str]) -> None:
        """Reconcile the channels with `addresses`: open new ones, retire those that left."""
        if not self._running:
            return
        # A set from discovery has no order; sorting keeps the round robin reproducible.
        wanted = list(addresses) if isinstance(addresses, Sequence) else sorted(addresses)
        for address in wanted:
            if address in self._replicas:
                continue
            replica = self._retiring.pop(address, None)
            if replica is not None:
                # Back before its last call ended: the same channel carries on.
                replica.retired = False
                replica.ready = self._health is None  # with health checks, its watcher decides
                log.info("router %s is back in the %s set", address, self._service)
            else:
                replica = _Replica(address, self._stub_factory, self._options, self._health)
                log.info("router %s joined the %s set", address, self._service)
            self._replicas[address] = replica
            self._watch(replica)
        departed = set(self._replicas) - set(wanted)
        for address in departed:
            self._retire(self._replicas.pop(address))

    def _retire(self, replica: _Replica[StubT]) -> None:
        log.info(
            "router %s left the %s set; %d calls in flight there",
            replica.address,
            self._service,
            replica.calls,
        )
        replica.retired = True
        replica.ready = False
        # It will not be checked again: release whoever waits for its first check (start()).
        replica.probed.set()
        if replica.watcher is not None:
            replica.watcher.cancel()  # close() awaits it if it has not ended by then
        if replica.calls:
            self._retiring[replica.address] = replica
        else:
            self._close_channel(replica)

    def _call_ended(self, replica: _Replica[StubT]) -> None:
        if replica.retired and replica.calls == 0 and self._retiring.get(replica.address) is replica:
            del self._retiring[replica.address]
            self._close_channel(replica)

    def _close_channel(self, replica: _Replica[StubT]) -> None:
        closer = asyncio.create_task(replica.channel.close(grace=None), name=f"close-{replica.address}")
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)

    # -- health ------------------------------------------------------------------------

    def _watch(self, replica: _Replica[StubT]) -> None:
        if self._health is None:
            replica.probed.set()
            return
        # A reinstated replica's old watcher was cancelled when it retired: this one replaces it.
        watcher = asyncio.create_task(
            self._watch_health(replica, self._health), name=f"router-health-{replica.address}"
        )
        replica.watcher = watcher
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch_health(self, replica: _Replica[StubT], health: HealthWatch) -> None:
        try:
            await self._probe(replica, health)
        finally:
            replica.probed.set()
        while True:
            await asyncio.sleep(health.interval_s)
            await self._probe(replica, health)

    async def _probe(self, replica: _Replica[StubT], health: HealthWatch) -> None:
        was_ready = replica.ready
        ready = await self._check(replica, health)
        if replica.retired:
            return  # left the set while the check ran
        replica.ready = ready
        if ready != was_ready:
            log.info("router %s is %s", replica.address, "ready" if ready else "not ready")

    async def _check(self, replica: _Replica[StubT], health: HealthWatch) -> bool:
        try:
            reply = await replica.health.Check(
                health_pb2.HealthCheckRequest(service=replica.health_service), timeout=health.timeout_s
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND and replica.health_service:
                # This router does not register per-service readiness.
                replica.health_service = ""
                return await self._check(replica, health)
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                # No health service at all: a live connection is the best we know.
                return replica.channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    # -- calls -------------------------------------------------------------------------

    def _candidates(self) -> list[_Replica[StubT]]:
        """Replicas believed ready in round-robin order, then the rest (belief may lag)."""
        replicas = list(self._replicas.values())
        if not replicas:
            return []
        start = next(self._turn) % len(replicas)
        rotated = replicas[start:] + replicas[:start]
        return [r for r in rotated if r.ready] + [r for r in rotated if not r.ready]

    async def call(
        self,
        method: Callable[[StubT], Callable[..., Awaitable[ReplyT]]],
        request: Any,
        timeout_s: float,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> ReplyT:
        """Run `method(stub)(request)` on the replicas in turn until one answers; MeshError otherwise."""
        if not self._running:
            raise MeshError(ErrorCode.NOT_READY, f"the {self._service} client is not started")
        candidates = self._candidates()
        if not candidates:
            raise MeshError(ErrorCode.NOT_READY, f"no router replica found for the {self._service} call")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last_error: grpc.aio.AioRpcError | None = None
        for replica in candidates:
            if replica.retired:
                continue  # left the set since this call began
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            replica.calls += 1
            try:
                reply = await method(replica.stub)(request, timeout=remaining, metadata=metadata)
            except grpc.aio.AioRpcError as error:
                if not failed_before_answer(error):
                    raise from_rpc_error(error) from None
                replica.ready = False
                last_error = error
                log.warning("router %s failed before answering: %s", replica.address, error.details())
                continue
            finally:
                replica.calls -= 1
                self._call_ended(replica)
            if not replica.retired:
                replica.ready = True
            return reply
        if last_error is None:
            raise MeshError(
                ErrorCode.DEADLINE_EXCEEDED,
                f"no router answered the {self._service} call within {timeout_s:g} s",
            )
        raise MeshError(ErrorCode.NOT_READY, f"no router replica answered: {last_error.details()}")
