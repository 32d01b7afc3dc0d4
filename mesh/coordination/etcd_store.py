"""`CoordinationStore` on etcd v3, through aetcd's generated gRPC bindings.

aetcd's `Client` is not used for calls: it has one timeout for every call,
one endpoint, no revision on range reads and a watcher that cannot resume.
This module drives aetcd's stubs (`aetcd.rpc`) on its own `grpc.aio`
channel instead, so that:

- every call carries its own deadline and fails fast (`wait_for_ready=False`)
  with STORE_UNAVAILABLE + Retry-After when etcd cannot be reached;
- the channel reconnects by itself, with a short capped backoff (gRPC's
  default caps at two minutes);
- a monitor probes etcd with a linearizable read and keeps `connected` (the
  store-connected gauge) true only while etcd answers;
- watches resume across disconnects (`ResumableWatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from aetcd import rpc
from aetcd.utils import prefix_range_end

from mesh.coordination.backoff import BackoffPolicy
from mesh.coordination.clock import SleepClock, SystemSleepClock
from mesh.coordination.etcd_watch import ResumableWatch
from mesh.coordination.store import (
    DEFAULT_PREFIX,
    CoordinationStore,
    WatchStream,
    check_key,
    check_txn,
    check_value,
)
from mesh.coordination.types import (
    Condition,
    Delete,
    KeyValue,
    LeaseGrant,
    LeaseLostError,
    Put,
    Snapshot,
    TxnResult,
)
from mesh.errors import ErrorCode, MeshError

log = logging.getLogger(__name__)

_Response = TypeVar("_Response")

# Codes that mean "etcd is not answering" (as opposed to "the request is wrong").
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_RETRYABLE = _UNREACHABLE | {
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@dataclass(frozen=True)
class EtcdStoreConfig:
    """How the store talks to etcd."""

    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    """`host:port` of the members. Several must be IP literals of one family;
    for names, give one DNS name that resolves to every member."""
    prefix: str = DEFAULT_PREFIX
    """Namespace of every key, so several meshes can share one etcd."""
    op_timeout_s: float = 2.0
    """Deadline of each unary call (reads, writes, lease calls)."""
    retry_after_s: float = 2.0
    """Retry-After advertised with STORE_UNAVAILABLE."""
    probe_interval_s: float = 2.0
    """How often the monitor checks a healthy connection."""
    probe_timeout_s: float = 1.0
    """Deadline of one probe; a probe that misses it marks the store disconnected."""
    connect_timeout_s: float = 2.0
    """Deadline of one TCP/HTTP2 connection attempt."""
    reconnect: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(initial_s=0.1, max_s=2.0))
    """Backoff of channel reconnects and of watch resumes."""
    keepalive_time_s: float = 10.0
    """HTTP/2 ping interval that finds a dead connection under an idle watch (etcd allows >= 5 s)."""
    keepalive_timeout_s: float = 5.0
    """Ping answer deadline before the connection is dropped."""
    watch_queue_size: int = 1024
    """Events a watch buffers for a slow consumer before it stops reading the stream."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest response accepted (big prefix reads)."""

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("etcd store needs at least one endpoint")
        for name in ("op_timeout_s", "probe_interval_s", "probe_timeout_s", "connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


def channel_target(endpoints: Sequence[str]) -> str:
    """The gRPC target for the endpoints; raises ValueError for lists gRPC cannot express."""
    if len(endpoints) == 1:
        return endpoints[0]
    families = set()
    for endpoint in endpoints:
        host, _, _ = endpoint.rpartition(":")
        try:
            families.add(ipaddress.ip_address(host.strip("[]")).version)
        except ValueError:
            raise ValueError(
                f"several etcd endpoints must be IP addresses, not {host!r}; "
                "for names, give one DNS name that resolves to every member"
            ) from None
    if len(families) != 1:
        raise ValueError("several etcd endpoints must all be IPv4 or all IPv6")
    return f"ipv{families.pop()}:" + ",".join(endpoints)


class EtcdStore(CoordinationStore):
    """`CoordinationStore` backed by an etcd v3 cluster."""

    def __init__(
        self,
        config: EtcdStoreConfig | None = None,
        *,
        clock: SleepClock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config or EtcdStoreConfig()
        super().__init__(self._config.prefix)
        self._target = channel_target(self._config.endpoints)
        self._clock = clock or SystemSleepClock()
        self._rng = rng or random.Random()
        self._prefix_bytes = self.prefix.encode()
        self._channel: grpc.aio.Channel | None = None
        self._kv: rpc.KVStub | None = None
        self._lease: rpc.LeaseStub | None = None
        self._watch: rpc.WatchStub | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._watches: set[ResumableWatch] = set()
        self._closed = False

    @property
    def config(self) -> EtcdStoreConfig:
        return self._config

    # --- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        if self._channel is not None or self._closed:
            return
        cfg = self._config
        options = [
            ("grpc.initial_reconnect_backoff_ms", int(cfg.reconnect.initial_s * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(cfg.reconnect.max_s * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(cfg.connect_timeout_s * 1000)),
            ("grpc.keepalive_time_ms", int(cfg.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ]
        self._channel = rpc.insecure_channel(self._target, options=options)
        self._kv = rpc.KVStub(self._channel)
        self._lease = rpc.LeaseStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)
        self._monitor = asyncio.get_running_loop().create_task(self._run_monitor(), name="etcd-store-monitor")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for watch in list(self._watches):
            await watch.aclose()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        if self._channel is not None:
            await self._channel.close()
        self._set_connected(False)

    # --- reads and writes ------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        check_key(key)
        response = await self._call(
            "get", lambda kv, t: kv.Range(rpc.RangeRequest(key=self._full(key)), timeout=t)
        )
        return self._kv_from_pb(response.kvs[0]) if response.kvs else None

    async def get_prefix(self, prefix: str = "") -> Snapshot:
        full = self._full(prefix)
        request = rpc.RangeRequest(key=full, range_end=prefix_range_end(full))
        response = await self._call("get_prefix", lambda kv, t: kv.Range(request, timeout=t))
        items = tuple(sorted((self._kv_from_pb(kv) for kv in response.kvs), key=lambda kv: kv.key))
        return Snapshot(items, response.header.revision)

    async def put(self, key: str, value: bytes, *, lease_id: int = 0) -> int:
        check_key(key)
        check_value(value)
        request = rpc.PutRequest(key=self._full(key), value=value, lease=lease_id)
        response = await self._call("put", lambda kv, t: kv.Put(request, timeout=t))
        return response.header.revision

    async def delete(self, key: str) -> bool:
        check_key(key)
        request = rpc.DeleteRangeRequest(key=self._full(key))
        response = await self._call("delete", lambda kv, t: kv.DeleteRange(request, timeout=t))
        return response.deleted > 0

    async def txn(self, conditions: Sequence[Condition], ops: Sequence[Put | Delete]) -> TxnResult:
        check_txn(conditions, ops)
        request = rpc.TxnRequest(
            compare=[self._compare_pb(c) for c in conditions],
            success=[self._op_pb(op) for op in ops],
            failure=[
                rpc.RequestOp(request_range=rpc.RangeRequest(key=self._full(c.key))) for c in conditions
            ],
        )
        response = await self._call("txn", lambda kv, t: kv.Txn(request, timeout=t))
        if response.succeeded:
            return TxnResult(True, response.header.revision)
        current: dict[str, KeyValue | None] = {}
        for condition, op_response in zip(conditions, response.responses, strict=True):
            kvs = op_response.response_range.kvs
            current[condition.key] = self._kv_from_pb(kvs[0]) if kvs else None
        return TxnResult(False, response.header.revision, current)

    async def compact(self, revision: int) -> None:
        request = rpc.CompactionRequest(revision=revision, physical=False)
        try:
            await self._call("compact", lambda kv, t: kv.Compact(request, timeout=t))
        except _OutOfRange as error:
            if "future revision" in error.details:
                raise ValueError(f"cannot compact to future revision {revision}") from None
            # Already compacted at or past it: nothing left to do.

    # --- leases ----------------------------------------------------------

    async def grant_lease(self, ttl_s: float) -> LeaseGrant:
        if ttl_s <= 0:
            raise ValueError("lease ttl_s must be positive")
        request = rpc.LeaseGrantRequest(TTL=math.ceil(ttl_s), ID=0)
        response = await self._call(
            "lease grant", lambda _kv, t: self._lease_stub().LeaseGrant(request, timeout=t)
        )
        if response.error:
            raise MeshError(ErrorCode.INTERNAL, f"etcd refused a lease: {response.error}")
        return LeaseGrant(response.ID, float(response.TTL))

    async def keepalive_lease(self, lease_id: int, *, timeout_s: float | None = None) -> float:
        async def keepalive(_kv: rpc.KVStub, timeout: float) -> rpc.LeaseKeepAliveResponse:
            # One request per stream: the deadline then bounds the whole exchange.
            call = self._lease_stub().LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]), timeout=timeout
            )
            try:
                response = await call.read()
            finally:
                call.cancel()
            if response is grpc.aio.EOF:
                raise MeshError(
                    ErrorCode.STORE_UNAVAILABLE,
                    "etcd closed the lease keepalive stream",
                    retry_after_s=self._config.retry_after_s,
                )
            return response

        response = await self._call("lease keepalive", keepalive, timeout_s=timeout_s)
        return float(max(response.TTL, 0))

    async def revoke_lease(self, lease_id: int) -> None:
        request = rpc.LeaseRevokeRequest(ID=lease_id)
        with contextlib.suppress(LeaseLostError):  # already gone: what revoking wanted
            await self._call(
                "lease revoke", lambda _kv, t: self._lease_stub().LeaseRevoke(request, timeout=t)
            )

    # --- watches ---------------------------------------------------------

    def watch_prefix(self, prefix: str, *, start_revision: int) -> WatchStream:
        if start_revision < 1:
            raise ValueError("start_revision must be at least 1")
        if self._closed:
            raise MeshError(ErrorCode.STORE_UNAVAILABLE, "coordination store is closed")
        watch = ResumableWatch(
            open_stream=self._open_watch_stream,
            read_snapshot=lambda: self.get_prefix(prefix),
            key_prefix=self._full(prefix),
            decode=self._kv_from_pb,
            relative_prefix=prefix,
            start_revision=start_revision,
            create_timeout_s=self._config.op_timeout_s,
            backoff=self._config.reconnect,
            queue_size=self._config.watch_queue_size,
            clock=self._clock,
            rng=self._rng,
            on_close=self._watches.discard,
        )
        self._watches.add(watch)
        return watch

    # --- internals -------------------------------------------------------

    def _full(self, key: str) -> bytes:
        return self._prefix_bytes + key.encode()

    def _relative(self, key: bytes) -> str:
        return key[len(self._prefix_bytes) :].decode("utf-8", errors="backslashreplace")

    def _kv_from_pb(self, kv: rpc.KeyValue) -> KeyValue:
        return KeyValue(
            key=self._relative(kv.key),
            value=kv.value,
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
            lease_id=kv.lease,
        )

    def _compare_pb(self, condition: Condition) -> rpc.Compare:
        if condition.mod_revision is not None:
            return rpc.Compare(
                result=rpc.Compare.EQUAL,
                target=rpc.Compare.MOD,
                key=self._full(condition.key),
                mod_revision=condition.mod_revision,
            )
        return rpc.Compare(
            result=rpc.Compare.EQUAL,
            target=rpc.Compare.LEASE,
            key=self._full(condition.key),
            lease=condition.lease_id,
        )

    def _op_pb(self, op: Put | Delete) -> rpc.RequestOp:
        if isinstance(op, Put):
            return rpc.RequestOp(
                request_put=rpc.PutRequest(key=self._full(op.key), value=op.value, lease=op.lease_id)
            )
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._full(op.key)))

    def _lease_stub(self) -> rpc.LeaseStub:
        assert self._lease is not None
        return self._lease

    async def _open_watch_stream(self) -> grpc.aio.StreamStreamCall:
        await self._ensure_open()
        assert self._watch is not None
        return self._watch.Watch()

    async def _ensure_open(self) -> rpc.KVStub:
        if self._closed:
            raise MeshError(ErrorCode.STORE_UNAVAILABLE, "coordination store is closed")
        if self._channel is None:
            await self.start()
        assert self._kv is not None
        return self._kv

    async def _call(
        self,
        what: str,
        call: Callable[[rpc.KVStub, float], Awaitable[_Response]],
        *,
        timeout_s: float | None = None,
    ) -> _Response:
        """Run one RPC under a deadline and translate its failure."""
        kv = await self._ensure_open()
        timeout = timeout_s if timeout_s is not None else self._config.op_timeout_s
        try:
            # The gRPC deadline bounds the RPC; the outer one also bounds
            # anything before it reaches the wire.
            async with asyncio.timeout(timeout + 0.5):
                response = await call(kv, timeout)
        except grpc.aio.AioRpcError as error:
            raise self._translate(what, error) from None
        except TimeoutError:
            self._set_connected(False)
            raise MeshError(
                ErrorCode.STORE_UNAVAILABLE,
                f"etcd {what} did not answer within {timeout:.1f}s; a write may still have been applied",
                retry_after_s=self._config.retry_after_s,
            ) from None
        self._set_connected(True)
        return response

    def _translate(self, what: str, error: grpc.aio.AioRpcError) -> Exception:
        code, details = error.code(), error.details() or ""
        if code == grpc.StatusCode.NOT_FOUND and "lease not found" in details:
            return LeaseLostError(details)
        if code == grpc.StatusCode.OUT_OF_RANGE:
            return _OutOfRange(details)
        if code in _UNREACHABLE:
            self._set_connected(False)
        if code in _RETRYABLE:
            outcome = (
                "; a write may still have been applied" if code == grpc.StatusCode.DEADLINE_EXCEEDED else ""
            )
            return MeshError(
                ErrorCode.STORE_UNAVAILABLE,
                f"etcd {what} failed ({code.name}: {details}){outcome}",
                retry_after_s=self._config.retry_after_s,
            )
        return MeshError(ErrorCode.INTERNAL, f"etcd {what} failed ({code.name}: {details})")

    async def _run_monitor(self) -> None:
        """Keep `connected` current and the channel connecting while etcd is away."""
        cfg = self._config
        assert self._channel is not None and self._kv is not None
        probe = rpc.RangeRequest(key=self._prefix_bytes, limit=1, keys_only=True)
        while True:
            try:
                await self._kv.Range(probe, timeout=cfg.probe_timeout_s)
                self._set_connected(True)
            except grpc.aio.AioRpcError as error:
                if self._connected:
                    log.warning("etcd at %s unreachable: %s", self._target, error.code().name)
                self._set_connected(False)
            # Wake early on a channel state change (a drop, or a reconnect) so
            # the gauge follows the connection rather than the probe cadence.
            state = self._channel.get_state(try_to_connect=True)
            interval = (
                cfg.probe_interval_s if self._connected else min(cfg.probe_interval_s, cfg.reconnect.max_s)
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._channel.wait_for_state_change(state)


class _OutOfRange(Exception):
    def __init__(self, details: str) -> None:
        super().__init__(details)
        self.details = details
