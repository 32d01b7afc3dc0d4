"""Every replica routes by the leader's pool assignments: store records -> session overrides.

`PoolRoutingSync` keeps a copy of the `pools/` records (list, then watch;
a RESYNC replaces the copy) and derives worker id -> pool. For each worker
holding a stream to this replica it calls `WorkerSession.set_pool_override`:
the pool for an assigned worker (so `PoolFilter` sends it that pool's
traffic and nothing else), None for the rest (routing falls back to the
worker's own `--pool`, usually none: the shared fleet). A pool that is
deleted or expires drops out of the records, and its workers go back to the
shared fleet on every replica within a watch round trip.

A worker statically reserved (`--pool a`) is never overridden to another
pool: the leader never assigns it elsewhere, and a stale record must not
either.

While the store is unreachable the last known assignments stay in force:
they are the safest guess, and routing never waits for the store.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping

from mesh.coordination import CoordinationStore, SleepClock
from mesh.pools.mirror import PrefixMirror
from mesh.pools.pool_store import decode_all
from mesh.pools.records import POOLS_PREFIX, StoredPool
from mesh.registry import WorkerRegistry, WorkerSession

log = logging.getLogger(__name__)


class PoolRoutingSync:
    """Mirrors pool assignments from the store into this router's worker sessions."""

    def __init__(
        self,
        store: CoordinationStore,
        registry: WorkerRegistry,
        clock: SleepClock,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._registry = registry
        self._mirror = PrefixMirror(store, POOLS_PREFIX, clock, on_change=self._records_changed, rng=rng)
        self._pool_of: dict[str, str] = {}
        self._applying = False
        registry.add_listener(self._on_registry_change)

    # --- lifecycle -------------------------------------------------------

    def start(self) -> None:
        self._mirror.start()

    async def stop(self) -> None:
        await self._mirror.stop()

    async def wait_synced(self, timeout_s: float) -> bool:
        """Wait until the records have been read (and applied) once."""
        return await self._mirror.wait_synced(timeout_s)

    # --- views -----------------------------------------------------------

    @property
    def revision(self) -> int:
        """Store revision the routing reflects."""
        return self._mirror.revision

    @property
    def pool_of(self) -> Mapping[str, str]:
        """Worker id -> assigned pool, as this replica routes now."""
        return dict(self._pool_of)

    def pools(self) -> list[StoredPool]:
        """The records as this replica last saw them."""
        return decode_all(list(self._mirror.items.values()))

    def _records_changed(self) -> None:
        pool_of = {
            worker_id: stored.pool.name for stored in self.pools() for worker_id in stored.pool.worker_ids
        }
        if pool_of != self._pool_of:
            self._pool_of = pool_of
            self._apply(self._registry)

    # --- applying --------------------------------------------------------

    def _desired(self, session: WorkerSession) -> str | None:
        pool = self._pool_of.get(session.worker_id)
        static = session.status.pool.strip().lower()
        if pool is None or (static and static != pool):
            return None
        return pool

    def _apply(self, sessions: Iterable[WorkerSession]) -> None:
        # set_pool_override notifies registry listeners, this one included: no re-entry.
        if self._applying:
            return
        self._applying = True
        try:
            for session in sessions:
                if session.closed:
                    continue
                desired = self._desired(session)
                if session.pool_override != desired:
                    session.set_pool_override(desired)
                    log.info(
                        "worker %s now serves %s",
                        session.worker_id,
                        f"pool {desired!r}" if desired else "its own pool or the shared fleet",
                    )
        finally:
            self._applying = False

    def _on_registry_change(self) -> None:
        # Runs on every status report of every worker: touch only assigned
        # workers (a new session starts unassigned, which is already right for
        # every other worker), so the cost is the pools' size, not the fleet's.
        if self._applying or not self._pool_of:
            return
        sessions = [s for s in (self._registry.get(w) for w in self._pool_of) if s is not None]
        self._apply(sessions)
