"""One router as a member of the replica set: its lease, registrations, fences, leadership.

Lifecycle, driven by `Router`:

- `start(address)` after the gRPC server is serving: advertise the replica
  and start the background work. Never waits for the store.
- `release()` when draining: stop leading and publishing, then revoke the
  lease, so this replica's registration, its workers' keys and the `leader`
  key vanish at once for workers and the other replicas (instead of a TTL
  later). Idempotent.
- `stop()`: release if not done, and await every task this owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from mesh.clock import Clock
from mesh.coordination import CoordinationStore, SleepClock
from mesh.ha.config import ReplicaConfig
from mesh.ha.leadership import Leadership
from mesh.ha.membership import Membership
from mesh.ha.replica_lease import ReplicaLease

log = logging.getLogger(__name__)


class Replica:
    """See the module docstring. `lease`, `membership` and `leadership` are its parts."""

    def __init__(
        self,
        store: CoordinationStore,
        *,
        router_id: str,
        config: ReplicaConfig | None = None,
        clock: SleepClock,
        wall_clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        config = config or ReplicaConfig()
        rng = rng or random.Random()
        self.config = config
        self.lease = ReplicaLease(store, config, clock=clock, rng=rng)
        self.membership = Membership(
            store,
            self.lease,
            router_id=router_id,
            config=config,
            clock=clock,
            wall_clock=wall_clock,
            rng=rng,
        )
        self.leadership = Leadership(
            store, self.lease, router_id=router_id, config=config, clock=clock, rng=rng
        )
        self._lease_task: asyncio.Task[None] | None = None
        self._work: list[asyncio.Task[None]] = []
        self._released = False

    async def start(self, address: str) -> None:
        """Advertise this replica at `address` and start keeping the lease, publishing and campaigning."""
        if self._lease_task is not None:
            return
        self.membership.advertise(address)
        loop = asyncio.get_running_loop()
        self._lease_task = loop.create_task(self.lease.run(), name="ha-lease")
        self._work = [
            loop.create_task(self.membership.run(), name="ha-membership"),
            loop.create_task(self.leadership.run(), name="ha-leadership"),
        ]

    async def release(self) -> None:
        """Stop leading and publishing, then revoke the lease (its keys vanish everywhere at once)."""
        if self._released:
            return
        self._released = True
        # Leadership first: its loops stop and it resigns while the lease still stands.
        await _cancel_all(self._work)
        self._work = []
        self.membership.stop_publishing()
        await _cancel_all([self._lease_task] if self._lease_task is not None else [])
        await self.lease.release()
        log.info("replica lease released")

    async def stop(self) -> None:
        await self.release()


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await task
            except Exception:  # a failed background task must not stop shutdown
                log.exception("%s failed", task.get_name())
