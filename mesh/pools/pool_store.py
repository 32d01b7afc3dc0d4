"""Pool records in the coordination store: create-or-renew, renew, delete, CAS updates.

Every record is `pools/{name}` (see `records.py`) on a lease of its own whose
TTL is the pool's: renewing a pool is a keepalive of that lease (plus a
`last_renewed` update), and a pool nobody renews disappears with its lease,
which hands its workers back to the shared fleet without anyone acting.

Every write is a compare-and-swap on the record's `mod_revision`, so a
client's renewal and the leader's assignment update never overwrite each
other: the loser re-reads and tries again. A write that lost its lease
(the pool expired in between) fails as the pool being gone. Each store call
has a deadline; an unreachable store is `STORE_UNAVAILABLE` (503, Retry-After).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from mesh.clock import Clock
from mesh.coordination import Condition, CoordinationStore, Delete, KeyValue, LeaseLostError, Put
from mesh.errors import ErrorCode, MeshError
from mesh.pools.assignment import PoolState
from mesh.pools.records import (
    POOLS_PREFIX,
    AssignedWorker,
    Pool,
    StoredPool,
    decode_pool,
    encode_pool,
    pool_key,
)
from mesh.pools.spec import PoolSpec

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class PoolStoreConfig:
    """How pool records are read and written."""

    op_timeout_s: float = 5.0
    """Deadline of one store call (the store has its own, usually shorter; this bounds any store)."""
    cas_attempts: int = 16
    """Compare-and-swap rounds one operation tries before answering STORE_UNAVAILABLE.
    Each lost round means another writer made progress, so this only bounds pathological contention."""
    retry_after_s: float = 1.0
    """Retry-After of the STORE_UNAVAILABLE answered when the CAS rounds run out."""

    def __post_init__(self) -> None:
        if self.op_timeout_s <= 0 or self.cas_attempts < 1 or self.retry_after_s < 0:
            raise ValueError("PoolStoreConfig needs op_timeout_s > 0, cas_attempts >= 1, retry_after_s >= 0")


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    stored: StoredPool
    created: bool
    """False when the pool existed and was renewed (and its spec updated)."""


def _not_found(name: str) -> MeshError:
    return MeshError(ErrorCode.POOL_NOT_FOUND, f"pool {name!r} does not exist (or expired)")


class PoolStore:
    """CRUD of pool records over a `CoordinationStore` (which the caller owns)."""

    def __init__(self, store: CoordinationStore, clock: Clock, config: PoolStoreConfig | None = None) -> None:
        self._store = store
        self._clock = clock
        self._config = config or PoolStoreConfig()

    @property
    def store(self) -> CoordinationStore:
        return self._store

    async def _bounded(self, call: Awaitable[_T], what: str) -> _T:
        try:
            async with asyncio.timeout(self._config.op_timeout_s):
                return await call
        except TimeoutError:
            raise MeshError(
                ErrorCode.STORE_UNAVAILABLE,
                f"coordination store did not answer {what} within {self._config.op_timeout_s:g} s",
            ) from None

    def _contended(self, name: str) -> MeshError:
        return MeshError(
            ErrorCode.STORE_UNAVAILABLE,
            f"pool {name!r} kept changing under {self._config.cas_attempts} attempts; try again",
            retry_after_s=self._config.retry_after_s,
        )

    # --- reads -----------------------------------------------------------

    async def get(self, name: str) -> StoredPool | None:
        kv = await self._bounded(self._store.get(pool_key(name)), f"a read of pool {name!r}")
        return None if kv is None else decode_pool(kv)

    async def list(self) -> tuple[list[StoredPool], int]:
        """Every readable pool, sorted by name, and the revision of the read (unreadable ones are logged)."""
        snapshot = await self._bounded(self._store.get_prefix(POOLS_PREFIX), "a read of the pools")
        return decode_all(snapshot.items), snapshot.revision

    # --- client operations -------------------------------------------------

    async def create_or_renew(self, spec: PoolSpec) -> CreateOutcome:
        """Create the pool, or renew it (updating its spec) when it exists. `spec.ttl_s` must be set."""
        if spec.ttl_s is None:
            raise ValueError("create_or_renew needs a spec with its TTL applied")
        key = pool_key(spec.name)
        for _ in range(self._config.cas_attempts):
            kv = await self._bounded(self._store.get(key), f"a read of pool {spec.name!r}")
            current = _readable(kv)
            if kv is None or current is None:
                outcome = await self._create(spec, kv)
            elif current.pool.ttl_s != spec.ttl_s:
                # A lease's TTL is fixed at grant: a new TTL needs a new lease.
                outcome = await self._move_to_new_lease(spec, kv, current)
            else:
                outcome = await self._renew_existing(kv, current, spec)
            if outcome is not None:
                return outcome
        raise self._contended(spec.name)

    async def renew(self, name: str) -> StoredPool:
        """Keep the pool's lease alive and record the renewal; POOL_NOT_FOUND when it is gone."""
        key = pool_key(name)
        for _ in range(self._config.cas_attempts):
            kv = await self._bounded(self._store.get(key), f"a read of pool {name!r}")
            current = _readable(kv)
            if kv is None or current is None:
                raise _not_found(name)
            outcome = await self._renew_existing(kv, current, current.pool.spec)
            if outcome is None:
                continue
            return outcome.stored
        raise self._contended(name)

    async def delete(self, name: str) -> bool:
        """Remove the pool now (its workers go back to the fleet); False when it did not exist."""
        key = pool_key(name)
        for _ in range(self._config.cas_attempts):
            kv = await self._bounded(self._store.get(key), f"a read of pool {name!r}")
            if kv is None:
                return False
            result = await self._bounded(
                self._store.txn([Condition.at_revision(key, kv.mod_revision)], [Delete(key)]),
                f"the deletion of pool {name!r}",
            )
            if result.succeeded:
                await self._revoke_quietly(kv.lease_id)
                return True
        raise self._contended(name)

    # --- leader operations -------------------------------------------------

    async def write_assignment(
        self,
        current: StoredPool,
        workers: Sequence[AssignedWorker],
        state: PoolState,
        fence: Sequence[Condition] = (),
    ) -> bool:
        """Record the leader's decision iff the record is unchanged since `current` was read
        and every `fence` condition holds. False: re-read and decide again."""
        pool = dataclasses.replace(
            current.pool, assigned_workers=tuple(sorted(workers, key=lambda w: w.name)), state=state
        )
        key = pool_key(pool.name)
        try:
            result = await self._bounded(
                self._store.txn(
                    [Condition.at_revision(key, current.mod_revision), *fence],
                    [Put(key, encode_pool(pool), current.lease_id)],
                ),
                f"the assignment of pool {pool.name!r}",
            )
        except LeaseLostError:
            return False  # the pool expired meanwhile: nothing to record
        return result.succeeded

    async def remove_expired(self, current: StoredPool, fence: Sequence[Condition] = ()) -> bool:
        """Delete a pool whose TTL passed unrenewed but whose lease lingers (etcd extends leases
        across its own leader changes), iff nobody renewed it since `current` was read."""
        key = pool_key(current.pool.name)
        result = await self._bounded(
            self._store.txn([Condition.at_revision(key, current.mod_revision), *fence], [Delete(key)]),
            f"the removal of expired pool {current.pool.name!r}",
        )
        if result.succeeded:
            await self._revoke_quietly(current.lease_id)
        return result.succeeded

    # --- internals ---------------------------------------------------------

    async def _create(self, spec: PoolSpec, replacing: KeyValue | None) -> CreateOutcome | None:
        """A fresh record on a fresh lease, replacing `replacing` (a dead or unreadable record) if given."""
        assert spec.ttl_s is not None
        now_s = self._clock.wall()
        pool = Pool(spec=spec, state=PoolState.PENDING, created_at_s=now_s, last_renewed_s=now_s)
        key = pool_key(spec.name)
        grant = await self._bounded(self._store.grant_lease(spec.ttl_s), "a lease grant")
        condition = (
            Condition.absent(key) if replacing is None else Condition.at_revision(key, replacing.mod_revision)
        )
        try:
            result = await self._bounded(
                self._store.txn([condition], [Put(key, encode_pool(pool), grant.lease_id)]),
                f"the creation of pool {spec.name!r}",
            )
        except BaseException:
            await self._revoke_quietly(grant.lease_id)
            raise
        if not result.succeeded:
            await self._revoke_quietly(grant.lease_id)
            return None
        if replacing is not None and replacing.lease_id:
            await self._revoke_quietly(replacing.lease_id)
        log.info("pool %s created (ttl %gs, gpus %s)", spec.name, spec.ttl_s, dict(spec.gpus))
        return CreateOutcome(StoredPool(pool, grant.lease_id, result.revision), created=True)

    async def _move_to_new_lease(
        self, spec: PoolSpec, kv: KeyValue, current: StoredPool
    ) -> CreateOutcome | None:
        assert spec.ttl_s is not None
        grant = await self._bounded(self._store.grant_lease(spec.ttl_s), "a lease grant")
        pool = _renewed(current.pool, spec, self._clock.wall())
        key = pool_key(spec.name)
        try:
            result = await self._bounded(
                self._store.txn(
                    [Condition.at_revision(key, kv.mod_revision)],
                    [Put(key, encode_pool(pool), grant.lease_id)],
                ),
                f"the renewal of pool {spec.name!r}",
            )
        except BaseException:
            await self._revoke_quietly(grant.lease_id)
            raise
        if not result.succeeded:
            await self._revoke_quietly(grant.lease_id)
            return None
        # The record is on the new lease now: revoking the old one deletes nothing.
        await self._revoke_quietly(kv.lease_id)
        return CreateOutcome(StoredPool(pool, grant.lease_id, result.revision), created=False)

    async def _renew_existing(
        self, kv: KeyValue, current: StoredPool, spec: PoolSpec
    ) -> CreateOutcome | None:
        """Keepalive + CAS update; a dead lease means the pool is gone (create replaces it)."""
        name = current.pool.name
        remaining_s = await self._bounded(
            self._store.keepalive_lease(kv.lease_id, timeout_s=self._config.op_timeout_s),
            f"the renewal of pool {name!r}",
        )
        if remaining_s <= 0:
            if spec is current.pool.spec:
                raise _not_found(name)  # a plain renew: the pool expired
            return await self._create(spec, kv)
        pool = _renewed(current.pool, spec, self._clock.wall())
        key = pool_key(name)
        try:
            result = await self._bounded(
                self._store.txn(
                    [Condition.at_revision(key, kv.mod_revision)], [Put(key, encode_pool(pool), kv.lease_id)]
                ),
                f"the renewal of pool {name!r}",
            )
        except LeaseLostError:
            # Expired between the keepalive and the write.
            if spec is current.pool.spec:
                raise _not_found(name) from None
            return None
        if not result.succeeded:
            return None
        return CreateOutcome(StoredPool(pool, kv.lease_id, result.revision), created=False)

    async def _revoke_quietly(self, lease_id: int) -> None:
        if not lease_id:
            return
        try:
            await self._bounded(self._store.revoke_lease(lease_id), "a lease revoke")
        except MeshError as error:
            # Not fatal: an orphaned lease holds nothing (or only a dead record) and ends by its TTL.
            log.info("could not revoke lease %x (%s); it will expire", lease_id, error)


def _renewed(pool: Pool, spec: PoolSpec, now_s: float) -> Pool:
    # A changed spec invalidates the leader's last verdict until it decides again.
    state = pool.state if spec == pool.spec and pool.state is not PoolState.EXPIRED else PoolState.PENDING
    return dataclasses.replace(pool, spec=spec, state=state, last_renewed_s=max(now_s, pool.last_renewed_s))


def _readable(kv: KeyValue | None) -> StoredPool | None:
    if kv is None:
        return None
    try:
        return decode_pool(kv)
    except MeshError as error:
        # Replaced by the next create; until then it reserves nothing.
        log.error("%s", error)
        return None


def decode_all(items: Sequence[KeyValue]) -> list[StoredPool]:
    """Every readable pool of a snapshot, sorted by name; unreadable records are logged and skipped."""
    pools = [stored for stored in (_readable(kv) for kv in items) if stored is not None]
    return sorted(pools, key=lambda stored: stored.pool.name)
