"""The leader's pool assignment loop: decide, then record the decision in the store.

Only the leader runs `lead()`; whoever owns leadership starts it on winning
and cancels it on losing. Each pass reads every pool record and the fleet,
runs the pure `assign_pools`, and writes back only the records whose
assigned workers or state changed, each as a compare-and-swap on the record
(plus the leadership fence, when one is given): a client renewing at the
same moment, or a deposed leader still finishing a pass, makes the write
fail instead of clobbering anything, and the next pass decides again.

Passes run when a pool record changes (a watch on `pools/`), when the
fleet changes in a way assignment reads (profile, bundle, static pool,
health, membership), and every `resync_interval_s` regardless, which also
removes pools left unrenewed past their TTL while their lease lingers.
Because the record is the decision, a new leader starts from the last
one's assignments, and stability (rule 3 of `assign_pools`) keeps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mesh.coordination import Backoff, BackoffPolicy, Condition, SleepClock
from mesh.errors import ErrorCode, MeshError
from mesh.pools.assignment import AssignmentPlan, FleetWorker, PoolClaim, assign_pools
from mesh.pools.fleet import FleetSource
from mesh.pools.pool_store import PoolStore
from mesh.pools.records import POOLS_PREFIX, AssignedWorker, StoredPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssignerConfig:
    """How the leader's assignment loop paces itself."""

    resync_interval_s: float = 5.0
    """Longest time between passes, changes or not (heals anything a watch missed, removes lingering expired pools)."""
    min_pass_interval_s: float = 0.1
    """Shortest time between passes, so a burst of changes costs one pass, not one per change."""
    expiry_grace_s: float = 2.0
    """Extra time past the TTL without a renewal before the leader removes a pool whose lease
    did not (etcd extends leases across its own leader changes): the store's own expiry
    should always come first."""
    settle_s: float = 3.0
    """How long the fleet view must have been filling before a leader's first pass: a router
    that just started has not yet seen every worker reconnect, and deciding on a half-known
    fleet would take tenants' workers away only to hand them back. A replica up longer than
    this takes over leadership without waiting."""
    retry: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(initial_s=0.2, max_s=5.0))
    """Backoff between passes that failed (store unreachable)."""

    def __post_init__(self) -> None:
        if (
            self.resync_interval_s <= 0
            or min(self.min_pass_interval_s, self.expiry_grace_s, self.settle_s) < 0
        ):
            raise ValueError("AssignerConfig needs resync_interval_s > 0 and non-negative intervals")


@dataclass(frozen=True, slots=True)
class PassReport:
    """What one pass did (for tests and logs)."""

    plan: AssignmentPlan
    written: tuple[str, ...]
    """Pools whose record was updated."""
    conflicts: tuple[str, ...]
    """Pools whose record changed under the pass (re-decided next pass)."""
    expired: tuple[str, ...]
    """Pools removed because their TTL passed unrenewed."""


Fence = Callable[[], Sequence[Condition]]


def _no_fence() -> Sequence[Condition]:
    return ()


class PoolAssigner:
    """Decides and records pool assignments; `lead()` while leader, `reconcile_once()` for one pass."""

    def __init__(
        self,
        pool_store: PoolStore,
        fleet: FleetSource,
        clock: SleepClock,
        config: AssignerConfig | None = None,
        *,
        fence: Fence = _no_fence,
        rng: random.Random | None = None,
    ) -> None:
        """`fence`: store conditions that hold only while this replica leads (e.g. the leader key
        held by its lease); every write carries them, so a deposed leader's writes fail."""
        self._pools = pool_store
        self._fleet = fleet
        self._clock = clock
        self._config = config or AssignerConfig()
        self._fence = fence
        self._rng = rng or random.Random()
        self.passes = 0
        """Passes completed (for tests and diagnostics)."""
        self.expired = 0
        """Pools this replica removed, as leader, because their TTL passed unrenewed."""
        self._unrenewed_since: dict[str, tuple[tuple[float, float], float]] = {}
        self.fleet_view_since_s: float | None = None
        """Monotonic time the fleet view began filling (the router's start); None: when `lead()` starts."""

    async def reconcile_once(self) -> PassReport:
        """Read pools and fleet, decide, write what changed. Raises STORE_UNAVAILABLE."""
        stored, _revision = await self._pools.list()
        fleet = await self._fleet.workers()
        report = await self._apply(stored, fleet)
        self.passes += 1
        return report

    def _unrenewed_too_long(self, entry: StoredPool) -> bool:
        """Whether nobody renewed the pool for longer than its TTL (plus grace), on this clock.

        A renewal (or re-creation) always writes a new `last_renewed`; the
        leader's own assignment writes never do. So the renewal marker is
        that value, and the time is the leader's monotonic clock since it
        first saw the marker -- never the marker itself, another replica's
        wall clock, which a skewed replica could make look ancient.
        """
        now_s = self._clock.monotonic()
        marker = (entry.pool.created_at_s, entry.pool.last_renewed_s)
        seen = self._unrenewed_since.get(entry.pool.name)
        if seen is None or seen[0] != marker:
            self._unrenewed_since[entry.pool.name] = (marker, now_s)
            return False
        return now_s - seen[1] > entry.pool.ttl_s + self._config.expiry_grace_s

    async def _apply(self, stored: list[StoredPool], fleet: list[FleetWorker]) -> PassReport:
        names = {entry.pool.name for entry in stored}
        for gone in set(self._unrenewed_since) - names:
            del self._unrenewed_since[gone]
        live: list[StoredPool] = []
        expired: list[str] = []
        for entry in stored:
            if self._unrenewed_too_long(entry):
                if await self._pools.remove_expired(entry, self._fence()):
                    log.info("pool %s expired unrenewed; its workers return to the fleet", entry.pool.name)
                    expired.append(entry.pool.name)
                    self.expired += 1
                continue  # removed, or changed under us (renewed): either way, not decided on stale data
            live.append(entry)
        claims = [PoolClaim(e.pool.spec, e.pool.worker_ids, e.pool.created_at_s) for e in live]
        plan = assign_pools(claims, fleet)
        by_id = {worker.worker_id: worker for worker in fleet}
        written: list[str] = []
        conflicts: list[str] = []
        for entry in live:
            decision = plan.pools[entry.pool.name]
            if decision.workers == entry.pool.worker_ids and decision.state is entry.pool.state:
                continue
            workers = [_assigned_worker(by_id[worker_id]) for worker_id in decision.workers]
            if await self._pools.write_assignment(entry, workers, decision.state, self._fence()):
                written.append(entry.pool.name)
                log.info(
                    "pool %s: %s, workers %s%s",
                    entry.pool.name,
                    decision.state.value,
                    ",".join(decision.workers) or "none",
                    f", missing {dict(decision.missing)}" if decision.missing else "",
                )
            else:
                conflicts.append(entry.pool.name)
        return PassReport(plan, tuple(written), tuple(conflicts), tuple(expired))

    async def lead(self) -> None:
        """Run passes until cancelled: on pool changes, fleet changes and every resync interval."""
        since_s = self.fleet_view_since_s if self.fleet_view_since_s is not None else self._clock.monotonic()
        settle_until_s = since_s + self._config.settle_s
        if self._clock.monotonic() < settle_until_s:
            await self._clock.sleep(settle_until_s - self._clock.monotonic())
        # The other replicas' registrations must be in the view too; bounded, since a store
        # that cannot be read makes every pass fail anyway (and they retry).
        await self._fleet.wait_ready(self._config.resync_interval_s)
        pools_changed = asyncio.Event()
        fleet_changed = asyncio.Event()
        unsubscribe = self._fleet.subscribe(fleet_changed.set)
        watcher = asyncio.create_task(self._watch_pools(pools_changed), name="pool-assigner-watch")
        backoff = Backoff(self._config.retry, self._rng)
        last_fleet: frozenset[FleetWorker] | None = None
        pools_dirty = True
        next_resync_s = 0.0
        try:
            while True:
                now_s = self._clock.monotonic()
                if not pools_dirty and now_s < next_resync_s:
                    await _wait_any((pools_changed, fleet_changed), self._clock, next_resync_s - now_s)
                pools_dirty = pools_dirty or pools_changed.is_set()
                pools_changed.clear()
                fleet_changed.clear()
                try:
                    fleet = await self._fleet.workers()
                    signature = frozenset(fleet)
                    resync_due = self._clock.monotonic() >= next_resync_s
                    # Most fleet wake-ups are queue-depth noise: no pass unless assignment's inputs moved.
                    if pools_dirty or resync_due or signature != last_fleet:
                        stored, _revision = await self._pools.list()
                        report = await self._apply(stored, fleet)
                        self.passes += 1
                        # A lost CAS means the record moved; its watch event also triggers a pass.
                        pools_dirty = bool(report.conflicts)
                        last_fleet = signature
                        next_resync_s = self._clock.monotonic() + self._config.resync_interval_s
                    backoff.reset()
                except MeshError as error:
                    if error.code is ErrorCode.STORE_UNAVAILABLE:
                        log.info("pool assignment pass deferred: %s", error)
                    elif error.code is ErrorCode.NOT_READY:
                        # The fence says this replica no longer leads; leadership cancels us shortly.
                        log.info("pool assignment paused: %s", error)
                    else:
                        log.exception("pool assignment pass failed")
                    pools_dirty = True
                    await self._clock.sleep(backoff.next_delay_s())
                    continue
                await self._clock.sleep(self._config.min_pass_interval_s)
        finally:
            unsubscribe()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch_pools(self, changed: asyncio.Event) -> None:
        """Set `changed` on every change under `pools/` (list-then-watch, restarted on failure)."""
        backoff = Backoff(self._config.retry, self._rng)
        store = self._pools.store
        while True:
            try:
                _stored, revision = await self._pools.list()
                async with store.watch_prefix(POOLS_PREFIX, start_revision=revision + 1) as events:
                    changed.set()  # whatever happened before the watch began
                    backoff.reset()
                    async for _event in events:
                        changed.set()
            except MeshError as error:
                log.info("pool watch interrupted (%s); restarting", error)
            except Exception:  # a bug here must not silence the trigger for good: resync covers the gap
                log.exception("pool watch failed; restarting")
            await self._clock.sleep(backoff.next_delay_s())


def _assigned_worker(worker: FleetWorker) -> AssignedWorker:
    return AssignedWorker(
        name=worker.worker_id, url=worker.url, gpu=worker.machine_profile, bundle=worker.bundle
    )


async def _wait_any(events: Sequence[asyncio.Event], clock: SleepClock, timeout_s: float) -> None:
    """Return when any of `events` is set or `timeout_s` passes on `clock`, whichever is first."""
    if any(event.is_set() for event in events):
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    waiters.append(asyncio.ensure_future(clock.sleep(timeout_s)))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
