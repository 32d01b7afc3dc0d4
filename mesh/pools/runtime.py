"""`RouterPools`: tenant pools inside one router, wired and with one lifecycle.

    pools = RouterPools(router.store, router.registry, clock=..., leadership=router.leadership)
    add_pools_servicer(pools.service, grpc_server)     # mesh.v1.Pools
    await pools.start()                                # every replica: routing sync; the leader: assignment
    ...
    await pools.stop()                                 # before the store closes

Every replica serves `PoolService` and runs `PoolRoutingSync` (store records
-> worker session overrides). Exactly one replica, the leader, runs
`PoolAssigner.lead()`: it is registered with the mesh's leadership
(`mesh.ha.Leadership.run_while_leader`), and every write it makes carries
the leadership's `write_condition()`, so a deposed leader cannot write.
Without a leadership (`leadership=None`: one embedded router, nobody to
elect against) the assigner simply runs for the router's whole life.

The fleet the leader assigns from is this replica's own streams merged with
every replica's worker registrations (`workers/...`, written by mesh.ha), so
a worker connected to another replica only is still assignable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mesh.coordination import Condition, CoordinationStore, SleepClock, SystemSleepClock
from mesh.pools.assigner import AssignerConfig, PoolAssigner
from mesh.pools.fleet import FleetSource, LocalFleet, MergedFleet, StoreFleet
from mesh.pools.pool_store import PoolStore, PoolStoreConfig
from mesh.pools.routing_sync import PoolRoutingSync
from mesh.pools.service import PoolService
from mesh.pools.spec import PoolLimits
from mesh.registry import WorkerRegistry

log = logging.getLogger(__name__)

ASSIGNMENT_LOOP = "pool-assignment"


class Leadership(Protocol):
    """What pools need from the mesh's leadership (`mesh.ha.Leadership` provides it)."""

    @property
    def is_leader(self) -> bool: ...

    def run_while_leader(
        self, name: str, loop: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        """Run `loop()` during every term; returns an async function that unregisters it."""
        ...

    def write_condition(self) -> Condition:
        """A txn condition that holds only while this term lasts; raises MeshError(NOT_READY) otherwise."""
        ...


@dataclass(frozen=True)
class PoolsConfig:
    """Tenant pools of one router."""

    limits: PoolLimits = field(default_factory=PoolLimits)
    """What a pool spec may ask for (TTL bounds, counts)."""
    store: PoolStoreConfig = field(default_factory=PoolStoreConfig)
    """Deadlines and CAS rounds of pool record writes."""
    assigner: AssignerConfig = field(default_factory=AssignerConfig)
    """Pacing of the leader's assignment loop."""


class RouterPools:
    """Pool service, routing sync and (while leader) assignment of one router."""

    def __init__(
        self,
        store: CoordinationStore,
        registry: WorkerRegistry,
        *,
        clock: SleepClock | None = None,
        config: PoolsConfig | None = None,
        leadership: Leadership | None = None,
        bundle_exists: Callable[[str], bool] | None = None,
        fleet: FleetSource | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """
        leadership: the mesh's leader election; None for a lone embedded router (always leads).
        bundle_exists: whether the catalog knows a bundle (pool specs naming others are refused).
        fleet: override the workers assignment sees (tests); default: own streams + store registrations.
        """
        self.config = config or PoolsConfig()
        self._clock = clock or SystemSleepClock()
        self._leadership = leadership
        self.pool_store = PoolStore(store, self._clock, self.config.store)
        self.service = PoolService(
            self.pool_store, self._clock, limits=self.config.limits, bundle_exists=bundle_exists
        )
        """The in-process `PoolsApi` (for `add_pool_routes` and `add_pools_servicer`)."""
        self.routing = PoolRoutingSync(store, registry, self._clock, rng=rng)
        self._store_fleet: StoreFleet | None = None
        if fleet is None:
            self._store_fleet = StoreFleet(store, self._clock, rng=rng)
            fleet = MergedFleet([LocalFleet(registry), self._store_fleet])
        self.fleet = fleet
        self.assigner = PoolAssigner(
            self.pool_store, self.fleet, self._clock, self.config.assigner, fence=self._fence, rng=rng
        )
        self._unregister: Callable[[], Awaitable[None]] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this replica runs pool assignment."""
        return self._leadership is None or self._leadership.is_leader

    def _fence(self) -> Sequence[Condition]:
        return () if self._leadership is None else (self._leadership.write_condition(),)

    def events(self) -> dict[str, int]:
        """Pool events this router saw, by event, for metrics."""
        counts = dict(self.service.events)
        if self.assigner.expired:
            counts["expired"] = self.assigner.expired
        return counts

    async def start(self) -> None:
        """Start the routing sync and the assignment loop (on the leader); never waits for the store."""
        self.routing.start()
        self.assigner.fleet_view_since_s = self._clock.monotonic()
        if self._store_fleet is not None:
            self._store_fleet.start()
        if self._leadership is not None:
            if self._unregister is None:
                self._unregister = self._leadership.run_while_leader(ASSIGNMENT_LOOP, self.assigner.lead)
        elif self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.assigner.lead(), name=ASSIGNMENT_LOOP)

    async def stop(self) -> None:
        """Stop assigning and mirroring (call before the store closes)."""
        unregister, self._unregister = self._unregister, None
        if unregister is not None:
            await unregister()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._store_fleet is not None:
            await self._store_fleet.stop()
        await self.routing.stop()
