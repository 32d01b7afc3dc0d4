"""A pool as stored at `pools/{name}` and as clients see it.

The stored value is the reference's Pool JSON itself
(`{"name", "spec", "status": {"state", "assigned_workers", "created_at", "last_renewed"}}`),
so what a replica reads from the store is what it answers, and an operator
reading etcd sees the API's shape. The key lives under a lease whose TTL is
the pool's: nobody renewing means the key, and with it the reservation, goes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh.coordination import KeyValue
from mesh.errors import ErrorCode, MeshError
from mesh.pools.assignment import PoolState
from mesh.pools.spec import PoolSpec, pool_spec_from_stored

POOLS_PREFIX = "pools/"
"""Key space of pool records, relative to the store prefix (DESIGN.md: `pools/{name}`)."""


def pool_key(name: str) -> str:
    return f"{POOLS_PREFIX}{name}"


@dataclass(frozen=True, slots=True)
class AssignedWorker:
    """A worker a pool holds, as the reference lists it."""

    name: str
    """Worker id."""
    url: str = ""
    """Where it can be reached; "" because workers dial the routers and expose no address."""
    gpu: str = ""
    """Machine profile."""
    bundle: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "url": self.url, "gpu": self.gpu, "bundle": self.bundle}


@dataclass(frozen=True, slots=True)
class Pool:
    """One pool: what its client asked for and what the leader assigned."""

    spec: PoolSpec
    """Always has `ttl_s` set once stored."""
    state: PoolState = PoolState.PENDING
    assigned_workers: tuple[AssignedWorker, ...] = ()
    """Sorted by worker id."""
    created_at_s: float = 0.0
    """Wall-clock seconds since the epoch."""
    last_renewed_s: float = 0.0
    """Wall-clock seconds since the epoch of the last create or renew."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def worker_ids(self) -> tuple[str, ...]:
        return tuple(worker.name for worker in self.assigned_workers)

    @property
    def ttl_s(self) -> float:
        assert self.spec.ttl_s is not None, "a stored pool always has its TTL"
        return self.spec.ttl_s

    def expires_at_s(self) -> float:
        """Wall-clock time the pool expires unless renewed."""
        return self.last_renewed_s + self.ttl_s

    def as_seen_at(self, now_wall_s: float) -> Pool:
        """The pool with state EXPIRED once its TTL has passed unrenewed.

        The store's lease normally removes the record at that moment; this
        covers the gap until it does (etcd may even extend leases across a
        leader change), so nobody is told a dead pool is active.
        """
        if now_wall_s >= self.expires_at_s() and self.state is not PoolState.EXPIRED:
            return dataclasses.replace(self, state=PoolState.EXPIRED)
        return self

    def to_json(self) -> dict[str, Any]:
        """The reference's Pool object."""
        return {
            "name": self.name,
            "spec": self.spec.to_json(),
            "status": {
                "state": self.state.value,
                "assigned_workers": [worker.to_json() for worker in self.assigned_workers],
                "created_at": self.created_at_s,
                "last_renewed": self.last_renewed_s,
            },
        }


@dataclass(frozen=True, slots=True)
class StoredPool:
    """A pool with the store's bookkeeping, for compare-and-swap updates."""

    pool: Pool
    lease_id: int
    """The lease holding the record; keeping it alive keeps the pool."""
    mod_revision: int
    """Revision of the record's last write: the CAS guard of the next one."""


def encode_pool(pool: Pool) -> bytes:
    return json.dumps(pool.to_json(), separators=(",", ":"), sort_keys=True).encode()


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} is not a finite number")
    return float(value)


def _assigned(raw: Any) -> tuple[AssignedWorker, ...]:
    if not isinstance(raw, list):
        raise TypeError("status.assigned_workers is not a list")
    workers = []
    for entry in raw:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ValueError("an assigned worker has no name")
        workers.append(
            AssignedWorker(
                name=entry["name"],
                url=str(entry.get("url") or ""),
                gpu=str(entry.get("gpu") or ""),
                bundle=str(entry.get("bundle") or ""),
            )
        )
    return tuple(sorted(workers, key=lambda worker: worker.name))


def decode_pool(kv: KeyValue) -> StoredPool:
    """The pool stored in `kv`; MeshError(INTERNAL) naming the key when it is not one."""
    try:
        raw = json.loads(kv.value)
        if not isinstance(raw, Mapping):
            raise TypeError("not a JSON object")
        spec = pool_spec_from_stored(raw.get("spec") or {})
        if spec.ttl_s is None:
            raise ValueError("spec.ttl_seconds is missing")
        if kv.key != pool_key(spec.name):
            raise ValueError(f"holds pool {spec.name!r}")
        status = raw.get("status") or {}
        pool = Pool(
            spec=spec,
            state=PoolState(status.get("state", PoolState.PENDING.value)),
            assigned_workers=_assigned(status.get("assigned_workers", [])),
            created_at_s=_finite(status.get("created_at"), "status.created_at"),
            last_renewed_s=_finite(status.get("last_renewed"), "status.last_renewed"),
        )
    except (ValueError, TypeError, MeshError) as error:
        raise MeshError(ErrorCode.INTERNAL, f"pool record {kv.key!r} is unreadable: {error}") from None
    return StoredPool(pool, kv.lease_id, kv.mod_revision)
