"""The embedded store: one router, no etcd, the same semantics.

Revisions, leases, watches, compaction and RESYNC behave as `EtcdStore`'s do,
so code above the interface runs unchanged on either. Lease expiry follows
the injected clock. `set_reachable(False)` injects an outage for tests: every
call then raises STORE_UNAVAILABLE and watches pause, while leases keep
expiring as they would on an etcd the router cannot reach.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from mesh.coordination.clock import SleepClock, SystemSleepClock
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
    EventKind,
    KeyValue,
    LeaseGrant,
    LeaseLostError,
    Put,
    Snapshot,
    TxnResult,
    WatchEvent,
)
from mesh.errors import ErrorCode, MeshError


@dataclass(frozen=True)
class MemoryStoreConfig:
    """Knobs of the embedded store."""

    prefix: str = DEFAULT_PREFIX
    """Namespace of every key (kept for parity with etcd; one process holds one store)."""
    history_limit: int = 10_000
    """Events kept for watches that lag; older ones are compacted (laggards get a RESYNC)."""
    expiry_check_interval_s: float = 0.1
    """How often the reaper looks for expired leases (expiry is also checked on every call)."""
    retry_after_s: float = 2.0
    """Retry-After carried by STORE_UNAVAILABLE while an outage is injected."""


@dataclass
class _Lease:
    ttl_s: float
    expires_at_s: float
    keys: set[str] = field(default_factory=set)


class MemoryStore(CoordinationStore):
    """`CoordinationStore` held in this process."""

    def __init__(self, config: MemoryStoreConfig | None = None, *, clock: SleepClock | None = None) -> None:
        self._config = config or MemoryStoreConfig()
        super().__init__(self._config.prefix)
        self._clock = clock or SystemSleepClock()
        self._data: dict[str, KeyValue] = {}
        self._revision = 1  # etcd's first revision; the first write is 2
        self._history: list[WatchEvent] = []
        self._history_revisions: list[int] = []
        self._compacted = 0
        self._leases: dict[int, _Lease] = {}
        self._next_lease_id = 0x1000
        self._changed = asyncio.Event()
        self._reachable = True
        self._watches: set[_MemoryWatch] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self._set_connected(True)

    # --- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        if self._reaper is None and not self._closed:
            self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="memory-store-reaper")

    async def close(self) -> None:
        self._closed = True
        for watch in list(self._watches):
            await watch.aclose()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        self._set_connected(False)

    def set_reachable(self, reachable: bool) -> None:
        """Fault injection: make every call fail as an unreachable etcd would."""
        self._reachable = reachable
        self._set_connected(reachable and not self._closed)
        self._notify()

    @property
    def revision(self) -> int:
        """Current revision (for tests and diagnostics)."""
        return self._revision

    # --- reads and writes ------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        check_key(key)
        await self._enter()
        return self._data.get(key)

    async def get_prefix(self, prefix: str = "") -> Snapshot:
        await self._enter()
        return self._snapshot(prefix)

    async def put(self, key: str, value: bytes, *, lease_id: int = 0) -> int:
        check_key(key)
        check_value(value)
        await self._enter()
        self._check_leases([Put(key, value, lease_id)])
        return self._apply([Put(key, value, lease_id)])

    async def delete(self, key: str) -> bool:
        check_key(key)
        await self._enter()
        existed = key in self._data
        self._apply([Delete(key)])
        return existed

    async def txn(self, conditions: Sequence[Condition], ops: Sequence[Put | Delete]) -> TxnResult:
        check_txn(conditions, ops)
        await self._enter()
        if all(c.holds_for(self._data.get(c.key)) for c in conditions):
            self._check_leases(ops)
            return TxnResult(True, self._apply(ops))
        return TxnResult(False, self._revision, {c.key: self._data.get(c.key) for c in conditions})

    async def compact(self, revision: int) -> None:
        await self._enter()
        if revision > self._revision:
            raise ValueError(f"cannot compact to future revision {revision} (current {self._revision})")
        self._compact(revision)

    # --- leases ----------------------------------------------------------

    async def grant_lease(self, ttl_s: float) -> LeaseGrant:
        if ttl_s <= 0:
            raise ValueError("lease ttl_s must be positive")
        await self._enter()
        self._next_lease_id += 1
        self._leases[self._next_lease_id] = _Lease(ttl_s, self._clock.monotonic() + ttl_s)
        return LeaseGrant(self._next_lease_id, ttl_s)

    async def keepalive_lease(self, lease_id: int, *, timeout_s: float | None = None) -> float:
        await self._enter()
        lease = self._leases.get(lease_id)
        if lease is None:
            return 0.0
        lease.expires_at_s = self._clock.monotonic() + lease.ttl_s
        return lease.ttl_s

    async def revoke_lease(self, lease_id: int) -> None:
        await self._enter()
        self._drop_lease(lease_id)

    # --- watches ---------------------------------------------------------

    def watch_prefix(self, prefix: str, *, start_revision: int) -> WatchStream:
        if start_revision < 1:
            raise ValueError("start_revision must be at least 1")
        watch = _MemoryWatch(self, prefix, start_revision)
        self._watches.add(watch)
        return watch

    # --- internals -------------------------------------------------------

    async def _enter(self) -> None:
        if self._closed:
            raise MeshError(ErrorCode.STORE_UNAVAILABLE, "coordination store is closed", retry_after_s=None)
        if self._reaper is None:
            await self.start()
        if not self._reachable:
            raise MeshError(
                ErrorCode.STORE_UNAVAILABLE,
                "coordination store unreachable (injected outage)",
                retry_after_s=self._config.retry_after_s,
            )
        self._expire_leases()

    def _snapshot(self, prefix: str) -> Snapshot:
        items = tuple(self._data[k] for k in sorted(self._data) if k.startswith(prefix))
        return Snapshot(items, self._revision)

    def _check_leases(self, ops: Sequence[Put | Delete]) -> None:
        for op in ops:
            if isinstance(op, Put) and op.lease_id and op.lease_id not in self._leases:
                raise LeaseLostError(f"lease {op.lease_id:x} not found")

    def _apply(self, ops: Sequence[Put | Delete]) -> int:
        """Apply writes as one revision; returns it (unchanged when nothing changed)."""
        revision = self._revision + 1
        events: list[WatchEvent] = []
        for op in ops:
            old = self._data.get(op.key)
            if old is not None and old.lease_id and old.lease_id in self._leases:
                self._leases[old.lease_id].keys.discard(op.key)
            if isinstance(op, Put):
                kv = KeyValue(
                    key=op.key,
                    value=op.value,
                    create_revision=old.create_revision if old else revision,
                    mod_revision=revision,
                    version=old.version + 1 if old else 1,
                    lease_id=op.lease_id,
                )
                self._data[op.key] = kv
                if op.lease_id:
                    self._leases[op.lease_id].keys.add(op.key)
                events.append(WatchEvent(EventKind.PUT, op.key, revision, kv))
            elif old is not None:
                del self._data[op.key]
                events.append(WatchEvent(EventKind.DELETE, op.key, revision))
        if not events:
            return self._revision
        self._revision = revision
        self._history.extend(events)
        self._history_revisions.extend(e.revision for e in events)
        if len(self._history) > self._config.history_limit:
            self._compact(self._history_revisions[len(self._history) - self._config.history_limit])
        self._notify()
        return revision

    def _compact(self, revision: int) -> None:
        cut = bisect.bisect_left(self._history_revisions, revision)
        del self._history[:cut]
        del self._history_revisions[:cut]
        self._compacted = max(self._compacted, revision)

    def _drop_lease(self, lease_id: int) -> None:
        lease = self._leases.get(lease_id)
        if lease is None:
            return
        self._apply([Delete(k) for k in sorted(lease.keys)])
        del self._leases[lease_id]

    def _expire_leases(self) -> None:
        now = self._clock.monotonic()
        for lease_id in [i for i, lease in self._leases.items() if lease.expires_at_s <= now]:
            self._drop_lease(lease_id)

    async def _reap(self) -> None:
        while True:
            await self._clock.sleep(self._config.expiry_check_interval_s)
            self._expire_leases()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _events_from(self, prefix: str, revision: int) -> tuple[int, list[WatchEvent]]:
        """The first revision at or after `revision` with events under `prefix`, and those events."""
        start = bisect.bisect_left(self._history_revisions, revision)
        found: list[WatchEvent] = []
        for event in self._history[start:]:
            if found and event.revision != found[0].revision:
                break
            if event.key.startswith(prefix):
                found.append(event)
        return (found[0].revision if found else self._revision + 1), found


class _MemoryWatch(WatchStream):
    def __init__(self, store: MemoryStore, prefix: str, start_revision: int) -> None:
        self._store = store
        self._prefix = prefix
        self._next_revision = start_revision
        self._pending: collections.deque[WatchEvent] = collections.deque()
        self._closed = False

    async def __anext__(self) -> WatchEvent:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._pending:
                return self._pending.popleft()
            store = self._store
            changed = store._changed
            if store._reachable:
                if self._next_revision < store._compacted:
                    snapshot = store._snapshot(self._prefix)
                    self._next_revision = snapshot.revision + 1
                    return WatchEvent(
                        EventKind.RESYNC, self._prefix, snapshot.revision, snapshot=snapshot.items
                    )
                revision, events = store._events_from(self._prefix, self._next_revision)
                if events:
                    self._pending.extend(events)
                    self._next_revision = revision + 1
                    continue
                # Nothing under the prefix up to now: skip ahead so later scans stay short.
                self._next_revision = max(self._next_revision, store._revision + 1)
            await changed.wait()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._store._watches.discard(self)
            self._store._notify()


__all__ = ["MemoryStore", "MemoryStoreConfig"]
