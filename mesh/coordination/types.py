"""Plain values that cross the `CoordinationStore` interface.

Keys are `str` relative to the store's prefix (`config/epoch`, never
`/mesh/config/epoch`); values are `bytes`. Revisions are the store's global
revision counter: every successful write (a put, a delete that removed
something, a transaction that wrote, a lease expiry or revoke that removed
keys) advances it by exactly one, whatever the number of keys it touched.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class LeaseLostError(Exception):
    """A lease is gone: expired in the store, revoked, or lost by the local clock.

    Whoever held it must stop acting as the owner of what it guarded, and
    may call `LeaseKeeper.recover()` to take a new one.
    """


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as the store holds it."""

    key: str
    """Relative to the store's prefix."""
    value: bytes
    create_revision: int
    """Revision of the write that created this incarnation of the key."""
    mod_revision: int
    """Revision of the last write to the key."""
    version: int
    """Writes since creation; 1 for a new key."""
    lease_id: int = 0
    """Lease the key is attached to; 0 for a durable key."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent read of a key range."""

    items: tuple[KeyValue, ...]
    """Sorted by key."""
    revision: int
    """The store's revision when it was read: watch from `revision + 1` to see every later change."""

    def get(self, key: str) -> KeyValue | None:
        for kv in self.items:
            if kv.key == key:
                return kv
        return None

    def as_dict(self) -> dict[str, KeyValue]:
        return {kv.key: kv for kv in self.items}


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A lease the store granted."""

    lease_id: int
    ttl_s: float
    """TTL the store granted; etcd rounds the request up to whole seconds and to its minimum."""


@dataclass(frozen=True, slots=True)
class Condition:
    """One comparison of a transaction; all must hold for it to write.

    Set exactly one of `mod_revision` and `lease_id`. `mod_revision=0` means
    "the key does not exist".
    """

    key: str
    mod_revision: int | None = None
    """The key's last write must be at this revision (0: key absent)."""
    lease_id: int | None = None
    """The key must be attached to this lease (0: no lease, or absent)."""

    def __post_init__(self) -> None:
        if (self.mod_revision is None) == (self.lease_id is None):
            raise ValueError("a Condition compares exactly one of mod_revision and lease_id")

    @classmethod
    def absent(cls, key: str) -> Condition:
        return cls(key, mod_revision=0)

    @classmethod
    def at_revision(cls, key: str, mod_revision: int) -> Condition:
        return cls(key, mod_revision=mod_revision)

    @classmethod
    def held_by(cls, key: str, lease_id: int) -> Condition:
        return cls(key, lease_id=lease_id)

    def holds_for(self, kv: KeyValue | None) -> bool:
        if self.mod_revision is not None:
            return (kv.mod_revision if kv else 0) == self.mod_revision
        return (kv.lease_id if kv else 0) == self.lease_id


@dataclass(frozen=True, slots=True)
class Put:
    """Write `value` at `key`, attached to `lease_id` when non-zero."""

    key: str
    value: bytes
    lease_id: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove `key` (no error when absent)."""

    key: str


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Outcome of a compare-and-swap transaction."""

    succeeded: bool
    revision: int
    """The write's revision on success; the revision the comparison saw on failure."""
    current: Mapping[str, KeyValue | None] = field(default_factory=dict)
    """On failure: every compared key as it stood (None when absent). Empty on success."""


@dataclass(frozen=True, slots=True)
class CounterWrite:
    """Outcome of `put_and_bump`: a CAS write plus a counter increment, atomically."""

    succeeded: bool
    revision: int
    counter: int
    """On success the counter's new value; on conflict its current value."""
    current: KeyValue | None = None
    """On conflict: the written key as it stood (None when absent)."""


class EventKind(str, enum.Enum):
    PUT = "put"
    DELETE = "delete"
    RESYNC = "resync"
    """Synthetic: history the watch needed was compacted away. `snapshot`
    holds the whole watched range at `revision`; replace everything known
    under the prefix with it. Later events have revisions above it."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change under a watched prefix, in revision order."""

    kind: EventKind
    key: str
    """The changed key; for RESYNC the watched prefix."""
    revision: int
    """Revision of the change (several events share one when a transaction wrote several keys)."""
    kv: KeyValue | None = None
    """The key after a PUT; None for DELETE and RESYNC."""
    snapshot: tuple[KeyValue, ...] = ()
    """RESYNC only: the watched range at `revision`, sorted by key."""

    @property
    def value(self) -> bytes:
        return self.kv.value if self.kv else b""
