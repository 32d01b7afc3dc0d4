"""The one lease a router replica holds for its whole life.

Its registration, its workers' registrations and its leadership all hang on
it, so a router that dies takes all of them with it in one lease expiry.
`ReplicaLease.run` grants the lease as soon as the store answers (a router
starts and routes without etcd), and after every loss -- noticed by the
keeper's local clock, so it never waits on the store -- takes a new one
through `LeaseKeeper.recover()`, which moves the owned keys across.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from mesh.coordination import (
    Backoff,
    CoordinationStore,
    LeaseKeeper,
    LeaseKeeperConfig,
    LeaseLostError,
    SleepClock,
)
from mesh.errors import MeshError
from mesh.ha.config import ReplicaConfig

log = logging.getLogger(__name__)


class ReplicaLease:
    """Owns this replica's `LeaseKeeper`: keeps a lease granted until `release()`."""

    def __init__(
        self, store: CoordinationStore, config: ReplicaConfig, *, clock: SleepClock, rng: random.Random
    ) -> None:
        self._config = config
        self._clock = clock
        self._rng = rng
        self.keeper = LeaseKeeper(
            store,
            LeaseKeeperConfig(
                ttl_s=config.lease_ttl_s,
                retry_interval_s=min(0.5, config.lease_ttl_s / 6),
                loss_margin_s=config.lease_loss_margin_s,
            ),
            clock=clock,
        )
        """Write owned keys through it (`keeper.put` / `keeper.release`) so they follow recoveries."""
        self._granted = False
        self._changed = asyncio.Event()
        self._released = False
        self.grants = 0
        """Leases granted so far; above 1 means the lease was lost and recovered."""

    @property
    def is_held(self) -> bool:
        return not self._released and self._granted and self.keeper.is_held

    async def wait_held(self) -> None:
        """Return once a lease is held (at once when it is); LeaseLostError after `release()`."""
        while not self.is_held:
            if self._released:
                raise LeaseLostError("the replica lease was released")
            changed = self._changed
            await changed.wait()

    def _set_granted(self, granted: bool) -> None:
        self._granted = granted
        # Replace, then set: every waiter of the old event wakes, later waiters wait for the next change.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def run(self) -> None:
        """Grant, keep, recover; until cancelled. Never raises for an unreachable store."""
        backoff = Backoff(self._config.retry, self._rng)
        while True:
            try:
                if self.keeper.grant is None:
                    grant = await self.keeper.start()
                else:
                    recovery = await self.keeper.recover()
                    grant = recovery.lease
                    if recovery.taken:
                        log.warning("keys taken by others while the lease was lost: %s", recovery.taken)
            except (MeshError, LeaseLostError) as error:
                log.info("no lease yet (%s); retrying", error)
                await self._clock.sleep(backoff.next_delay_s())
                continue
            backoff.reset()
            self.grants += 1
            log.info("replica lease %x held (ttl %.0f s)", grant.lease_id, grant.ttl_s)
            self._set_granted(True)
            await self.keeper.wait_lost()
            self._set_granted(False)

    async def release(self) -> None:
        """Revoke the lease (its keys vanish at once, for every watcher) and stop keeping one."""
        self._released = True
        self._set_granted(False)
        with contextlib.suppress(MeshError):
            await self.keeper.close(revoke=True)
