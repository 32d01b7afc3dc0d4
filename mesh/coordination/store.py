"""The one interface the mesh uses for state that router replicas share.

`CoordinationStore` is implemented twice: `MemoryStore` (embedded, one router,
no etcd) and `EtcdStore`. Code above it is identical for both; the behavioural
suite in tests/etcd runs against both to keep them equivalent.

Semantics both implementations keep:

- Every key lives under the store's prefix (default `/mesh/`), so meshes can
  share one etcd; callers pass and receive keys relative to it.
- Revisions are global and strictly increasing; one write, however many keys
  it touched, is one revision. Watches deliver events in revision order, every
  event exactly once, and a synthetic RESYNC when history they need is gone.
- Leases expire `ttl_s` after the last keepalive; expiry deletes their keys in
  one revision. Writing under a lease that no longer exists raises
  `LeaseLostError`.
- A store that cannot be reached raises
  `MeshError(ErrorCode.STORE_UNAVAILABLE, retry_after_s=...)` within a bounded
  time instead of hanging, and reconnects by itself. A write that timed out may
  still have been applied: re-read (or compare-and-swap) before retrying.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Generic, Self, TypeVar

from mesh.coordination.types import (
    Condition,
    CounterWrite,
    Delete,
    KeyValue,
    LeaseGrant,
    Put,
    Snapshot,
    TxnResult,
    WatchEvent,
)
from mesh.errors import ErrorCode, MeshError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/mesh/"

# A counter bump retries while other writers win the race for the counter;
# each lost round means some other write made progress, so this bounds only
# pathological contention.
_COUNTER_ATTEMPTS = 64


def normalize_prefix(prefix: str) -> str:
    """The prefix with exactly one trailing slash, so `/mesh` never matches `/mesh2/...`."""
    if not prefix or not prefix.strip("/"):
        raise ValueError(f"store prefix must name a namespace, got {prefix!r}")
    return prefix.rstrip("/") + "/"


def check_key(key: str) -> None:
    if not key:
        raise ValueError("store key must be non-empty")


def check_value(value: bytes) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"store values are bytes, got {type(value).__name__}")


def check_txn(conditions: Sequence[Condition], ops: Sequence[Put | Delete]) -> None:
    """Refuse what etcd refuses, in both implementations: empty keys, a key written twice."""
    for item in [*conditions, *ops]:
        check_key(item.key)
        if isinstance(item, Put):
            check_value(item.value)
    written = [op.key for op in ops]
    if len(set(written)) != len(written):
        raise ValueError(f"a transaction may write each key once, got {written}")


EventT = TypeVar("EventT")


class EventStream(abc.ABC, Generic[EventT]):
    """An async iterator of events that holds resources until closed.

    Also an async context manager; leaving the context (or `aclose()`) ends
    the iteration and releases what the stream holds.
    """

    def __aiter__(self) -> Self:
        return self

    @abc.abstractmethod
    async def __anext__(self) -> EventT: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class WatchStream(EventStream[WatchEvent]):
    """Events under one prefix, in revision order, each exactly once."""


class CoordinationStore(abc.ABC):
    """Shared, revisioned key-value state with leases, watches and CAS.

    Lifecycle: `await start()` (or first use) connects in the background and
    never fails for an unreachable store; `await close()` cancels and awaits
    everything the store runs, watches included. Also an async context manager.
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = normalize_prefix(prefix)
        self._connected = False
        self._connected_event = asyncio.Event()
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def prefix(self) -> str:
        """Namespace every key lives under, with a trailing slash."""
        return self._prefix

    # --- lifecycle -------------------------------------------------------

    @abc.abstractmethod
    async def start(self) -> None:
        """Start background work (idempotent). Does not wait for a connection."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop background work and close watches and connections (idempotent)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- connection state ------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the store answered recently: the value of the store-connected gauge."""
        return self._connected

    def add_connection_listener(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """Call `listener(connected)` on every change; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait until connected or `timeout_s` passes; returns `connected`."""
        await self.start()
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected_event.wait()
        except TimeoutError:
            pass
        return self._connected

    def _set_connected(self, connected: bool) -> None:
        if connected == self._connected:
            return
        self._connected = connected
        if connected:
            self._connected_event.set()
        else:
            self._connected_event.clear()
        for listener in list(self._listeners):
            try:
                listener(connected)
            except Exception:  # a listener's bug must not break the store
                log.exception("store connection listener failed")

    # --- reads and writes ------------------------------------------------

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None:
        """The key, or None when absent."""

    @abc.abstractmethod
    async def get_prefix(self, prefix: str = "") -> Snapshot:
        """Every key starting with `prefix` (relative), with the revision of the read."""

    @abc.abstractmethod
    async def put(self, key: str, value: bytes, *, lease_id: int = 0) -> int:
        """Write unconditionally; returns the write's revision. Raises LeaseLostError for a dead lease."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove the key; returns whether it existed."""

    @abc.abstractmethod
    async def txn(self, conditions: Sequence[Condition], ops: Sequence[Put | Delete]) -> TxnResult:
        """Apply `ops` atomically, in one revision, iff every condition holds.

        Each key may be written once per transaction (ValueError otherwise).
        """

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Discard history before `revision`; watches that needed it get a RESYNC."""

    # --- leases ----------------------------------------------------------

    @abc.abstractmethod
    async def grant_lease(self, ttl_s: float) -> LeaseGrant:
        """A new lease that expires `ttl_s` after its last keepalive."""

    @abc.abstractmethod
    async def keepalive_lease(self, lease_id: int, *, timeout_s: float | None = None) -> float:
        """Renew the lease; returns its TTL from now, 0.0 when it no longer exists."""

    @abc.abstractmethod
    async def revoke_lease(self, lease_id: int) -> None:
        """End the lease now, deleting its keys; no error when already gone."""

    # --- watches ---------------------------------------------------------

    @abc.abstractmethod
    def watch_prefix(self, prefix: str, *, start_revision: int) -> WatchStream:
        """Changes under `prefix` (relative) from `start_revision` on (inclusive).

        List-then-watch: `snap = await get_prefix(p)`, then
        `watch_prefix(p, start_revision=snap.revision + 1)` misses nothing.
        """

    # --- compare-and-swap helpers, identical for every implementation ------

    async def put_if_revision(
        self, key: str, value: bytes, mod_revision: int, *, lease_id: int = 0
    ) -> TxnResult:
        """Write iff the key's last write is at `mod_revision` (0: iff absent)."""
        return await self.txn([Condition.at_revision(key, mod_revision)], [Put(key, value, lease_id)])

    async def create_if_absent(self, key: str, value: bytes, *, lease_id: int = 0) -> TxnResult:
        return await self.txn([Condition.absent(key)], [Put(key, value, lease_id)])

    async def put_and_bump(
        self,
        key: str,
        value: bytes,
        *,
        counter_key: str,
        expected_mod_revision: int | None = None,
        lease_id: int = 0,
    ) -> CounterWrite:
        """Write `key` and increment the decimal counter at `counter_key` in one transaction.

        `expected_mod_revision`: None writes unconditionally, 0 only creates,
        n only replaces the version written at revision n. A lost race on the
        counter alone is retried here; a failed condition on `key` is returned
        (`succeeded=False`) for the caller to resolve.
        """
        check_key(counter_key)
        counter_kv = await self.get(counter_key)
        for _ in range(_COUNTER_ATTEMPTS):
            counter = _parse_counter(counter_key, counter_kv)
            counter_revision = counter_kv.mod_revision if counter_kv else 0
            conditions = [Condition.at_revision(counter_key, counter_revision)]
            if expected_mod_revision is not None:
                conditions.append(Condition.at_revision(key, expected_mod_revision))
            result = await self.txn(
                conditions,
                [Put(key, value, lease_id), Put(counter_key, str(counter + 1).encode())],
            )
            if result.succeeded:
                return CounterWrite(True, result.revision, counter + 1)
            counter_kv = result.current.get(counter_key)
            if expected_mod_revision is not None and not conditions[1].holds_for(result.current.get(key)):
                return CounterWrite(
                    False, result.revision, _parse_counter(counter_key, counter_kv), result.current.get(key)
                )
        raise MeshError(
            ErrorCode.STORE_UNAVAILABLE,
            f"gave up bumping {counter_key!r} after {_COUNTER_ATTEMPTS} lost races",
            retry_after_s=1.0,
        )


def _parse_counter(counter_key: str, kv: KeyValue | None) -> int:
    if kv is None:
        return 0
    try:
        return int(kv.value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise MeshError(
            ErrorCode.INTERNAL, f"counter {counter_key!r} holds {kv.value[:32]!r}, not a decimal integer"
        ) from None
