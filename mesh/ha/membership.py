"""This replica's registrations in the store, and the fence book every replica shares.

What it writes (key layout in `mesh.ha.records`):

- `routers/{router_id}` for the replica itself, so workers and other
  replicas can find it;
- `workers/{worker_id}/{router_id}` for each worker whose current stream is
  on this replica, with the incarnation (instance uid) holding it; deleted
  when that stream ends, unless a newer stream of the same worker took over;
- `fenced/{worker_id}/{instance_uid}` for each incarnation this replica
  fenced, under a lease of its own so it outlives this replica.

Routing never waits for any of it. The registry service tells `Membership`
what happened (a session attached, ended, was fenced) synchronously; those
calls only update the desired state in memory. One publisher task converges
the store on it, in order, retrying while the store is away and after the
lease is recovered -- so an outage delays the store's view, never routing.

Every replica watches `fenced/`: a fence written anywhere reaches every
replica's book within a watch round trip, ends any live stream of that
incarnation there, and is checked on every Hello.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from mesh import __version__ as MESH_VERSION
from mesh.clock import Clock
from mesh.coordination import (
    Backoff,
    CoordinationStore,
    EventKind,
    LeaseGrant,
    LeaseLostError,
    Put,
    SleepClock,
)
from mesh.errors import MeshError
from mesh.ha.config import ReplicaConfig
from mesh.ha.fencing import FenceBook
from mesh.ha.records import (
    FENCED_PREFIX,
    ROUTERS_PREFIX,
    WORKERS_PREFIX,
    FenceRecord,
    RouterRecord,
    WorkerRecord,
    fence_key,
    parse_fence_key,
    router_key,
    worker_key,
)
from mesh.ha.replica_lease import ReplicaLease
from mesh.registry import WorkerSession

log = logging.getLogger(__name__)

FenceSession = Callable[[str, str, str], bool]
"""`(worker_id, instance_uid, reason)`: end that incarnation's live stream with a Fence, if there is one."""


class Membership:
    """Publishes this replica and its workers; keeps and shares the fence book.

    Implements the registry service's session listener (`session_attached`,
    `session_detached`, `session_fenced`) and fence gate (`is_fenced`).
    """

    def __init__(
        self,
        store: CoordinationStore,
        lease: ReplicaLease,
        *,
        router_id: str,
        config: ReplicaConfig,
        clock: SleepClock,
        wall_clock: Clock,
        rng: random.Random,
    ) -> None:
        self._store = store
        self._lease = lease
        self._router_id = router_id
        self._config = config
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng
        self.fences = FenceBook(clock, config.fence_ttl_s)
        """Fenced incarnations this replica knows of, its own and every other replica's."""
        self._fence_session: FenceSession = lambda _worker_id, _uid, _reason: False
        # Desired store state, and which keys still differ from it (key -> change number,
        # so a change made while its key was being written is not lost).
        self._desired: dict[str, bytes] = {}
        self._dirty: dict[str, int] = {}
        self._changes = 0
        self._wake = asyncio.Event()
        self._holders: dict[str, WorkerSession] = {}
        self._unpublished_fences: list[tuple[FenceRecord, float]] = []
        self._fence_wake = asyncio.Event()
        self.fences_watched = asyncio.Event()
        """Set once the `fenced/` prefix has been read: other replicas' fences are known."""

    def bind_registry(self, fence_session: FenceSession) -> None:
        """Where fences learned from other replicas end live streams."""
        self._fence_session = fence_session

    # -- what the router publishes -------------------------------------------------

    def advertise(self, address: str) -> None:
        """Register this replica at `address` (what workers dial) until the lease is released."""
        record = RouterRecord(router_id=self._router_id, address=address, version=MESH_VERSION)
        self._set(router_key(self._router_id), record.encode())

    @property
    def in_sync(self) -> bool:
        """Whether the store holds everything this replica wants there (as far as it knows)."""
        return not self._dirty and not self._unpublished_fences

    # -- the registry service's session listener -------------------------------------

    def session_attached(self, session: WorkerSession) -> None:
        if session.closed:
            return
        self._holders[session.worker_id] = session
        record = WorkerRecord(
            worker_id=session.worker_id,
            instance_uid=session.instance_uid,
            router_id=self._router_id,
            bundle=session.status.bundle,
            machine_profile=session.status.machine_profile,
            pool=session.status.pool,
            backend=session.backend,
            agent_version=session.agent_version,
        )
        self._set(worker_key(session.worker_id, self._router_id), record.encode())

    def session_detached(self, session: WorkerSession) -> None:
        # Only the worker's current stream owns the key: a replaced stream
        # ending after its successor attached must not delete the successor's.
        if self._holders.get(session.worker_id) is not session:
            return
        del self._holders[session.worker_id]
        self._set(worker_key(session.worker_id, self._router_id), None)

    def session_fenced(self, session: WorkerSession, reason: str) -> None:
        if not self.fences.add(session.worker_id, session.instance_uid):
            return
        log.warning("worker %s instance %s fenced: %s", session.worker_id, session.instance_uid, reason)
        record = FenceRecord(
            worker_id=session.worker_id,
            instance_uid=session.instance_uid,
            router_id=self._router_id,
            reason=reason,
            fenced_at_s=self._wall_clock.wall(),
        )
        self._unpublished_fences.append((record, self._clock.monotonic() + self._config.fence_ttl_s))
        self._fence_wake.set()

    def is_fenced(self, worker_id: str, instance_uid: str) -> bool:
        """The fence gate: whether a Hello from this incarnation must be refused."""
        return self.fences.is_fenced(worker_id, instance_uid)

    # -- background work (owned by `Replica`) ------------------------------------------

    async def run(self) -> None:
        """Publish registrations and fences and watch other replicas' fences, until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._publish_registrations(), name="ha-publish-registrations")
            tasks.create_task(self._publish_fences(), name="ha-publish-fences")
            tasks.create_task(self._watch_fences(), name="ha-watch-fences")

    def stop_publishing(self) -> None:
        """Forget everything still to write: the lease is about to be revoked, and its keys with it."""
        self._desired.clear()
        self._dirty.clear()

    def _set(self, key: str, value: bytes | None) -> None:
        if value is None:
            self._desired.pop(key, None)
        else:
            self._desired[key] = value
        self._changes += 1
        self._dirty[key] = self._changes
        self._wake.set()

    async def _publish_registrations(self) -> None:
        backoff = Backoff(self._config.retry, self._rng)
        keeper = self._lease.keeper
        while True:
            if not self._dirty:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._lease.wait_held()
            key, change = next(iter(self._dirty.items()))
            value = self._desired.get(key)
            try:
                if value is None:
                    await keeper.release(key)
                else:
                    await keeper.put(key, value)
            except LeaseLostError:
                continue  # the lease runner recovers it; wait_held() above waits for that
            except MeshError as error:
                log.info("store write of %s failed (%s); retrying", key, error)
                await self._clock.sleep(backoff.next_delay_s())
                continue
            backoff.reset()
            if self._dirty.get(key) == change:
                del self._dirty[key]

    async def _publish_fences(self) -> None:
        backoff = Backoff(self._config.retry, self._rng)
        grant: LeaseGrant | None = None
        granted_at_s = 0.0
        while True:
            if not self._unpublished_fences:
                self._fence_wake.clear()
                await self._fence_wake.wait()
                continue
            now_s = self._clock.monotonic()
            # A fence that would have expired by now has nothing left to protect.
            self._unpublished_fences = [
                (r, until_s) for r, until_s in self._unpublished_fences if until_s > now_s
            ]
            batch = {fence_key(r.worker_id, r.instance_uid): r for r, _ in self._unpublished_fences}
            if not batch:
                continue
            try:
                # Fences published together share one lease; a lease half spent
                # would end them early, so a fresh one is taken after that.
                if grant is None or now_s - granted_at_s > grant.ttl_s / 2:
                    grant = await self._store.grant_lease(self._config.fence_ttl_s)
                    granted_at_s = now_s
                ops = [Put(key, record.encode(), grant.lease_id) for key, record in batch.items()]
                await self._store.txn([], ops)
            except LeaseLostError:
                grant = None
                continue
            except MeshError as error:
                log.info("publishing %d fences failed (%s); retrying", len(batch), error)
                await self._clock.sleep(backoff.next_delay_s())
                continue
            backoff.reset()
            published = set(batch)
            self._unpublished_fences = [
                (r, until_s)
                for r, until_s in self._unpublished_fences
                if fence_key(r.worker_id, r.instance_uid) not in published
            ]

    async def _watch_fences(self) -> None:
        backoff = Backoff(self._config.retry, self._rng)
        while True:
            try:
                snapshot = await self._store.get_prefix(FENCED_PREFIX)
                for kv in snapshot.items:
                    self._learn_fence(kv.key)
                self.fences_watched.set()
                backoff.reset()
                async with self._store.watch_prefix(
                    FENCED_PREFIX, start_revision=snapshot.revision + 1
                ) as events:
                    async for event in events:
                        if event.kind is EventKind.PUT:
                            self._learn_fence(event.key)
                        elif event.kind is EventKind.RESYNC:
                            for kv in event.snapshot:
                                self._learn_fence(kv.key)
                        # DELETE: the fence's lease ran out; the local TTL ends it here too.
                        self.fences.prune()
            except MeshError as error:
                log.info("watch of fences failed (%s); retrying", error)
            await self._clock.sleep(backoff.next_delay_s())

    def _learn_fence(self, key: str) -> None:
        parsed = parse_fence_key(key)
        if parsed is None:
            log.warning("ignoring malformed fence key %r", key)
            return
        worker_id, instance_uid = parsed
        if self.fences.add(worker_id, instance_uid):
            log.info("worker %s instance %s was fenced by another replica", worker_id, instance_uid)
        # A live stream of that incarnation here must end too: it is the same stale process.
        self._fence_session(worker_id, instance_uid, "fenced by another replica")


# -- reads, for anyone holding the store --------------------------------------------------


async def read_routers(store: CoordinationStore) -> dict[str, RouterRecord]:
    """Live replicas by router id (malformed records are skipped). Raises MeshError(STORE_UNAVAILABLE)."""
    snapshot = await store.get_prefix(ROUTERS_PREFIX)
    routers: dict[str, RouterRecord] = {}
    for kv in snapshot.items:
        try:
            record = RouterRecord.decode(kv.value)
        except ValueError as error:
            log.warning("ignoring %s: %s", kv.key, error)
            continue
        routers[record.router_id] = record
    return routers


async def read_workers(store: CoordinationStore) -> dict[str, tuple[WorkerRecord, ...]]:
    """Registered workers by worker id: one record per replica holding a stream of it."""
    snapshot = await store.get_prefix(WORKERS_PREFIX)
    workers: dict[str, list[WorkerRecord]] = {}
    for kv in snapshot.items:
        try:
            record = WorkerRecord.decode(kv.value)
        except ValueError as error:
            log.warning("ignoring %s: %s", kv.key, error)
            continue
        workers.setdefault(record.worker_id, []).append(record)
    return {worker_id: tuple(records) for worker_id, records in workers.items()}
