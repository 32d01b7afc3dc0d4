"""Leadership of the replica set, for the loops that must run on one replica only.

    leadership = router.leadership
    leadership.run_while_leader("pool-expiry", expire_pools)   # expire_pools: async () -> None
    if leadership.is_leader: ...
    await store.txn([leadership.write_condition(), ...], [...])   # a deposed leader's write fails

Every replica campaigns continuously (`LeaderElection` on the `leader` key,
under the replica's own lease). The winner starts every registered loop; on
losing -- its lease lost by the local clock, the key deleted, the replica
draining -- it cancels them and awaits their end before campaigning again.
A leader that dies is replaced once its lease expires (`lease_ttl_s`),
through the other replicas' watch on the key.

A loop is an `async def` taking no arguments. It should run until cancelled;
if it returns, it stays stopped until the next term; if it raises, the error
is logged and it is restarted after `singleton_restart_s` while this replica
still leads. Cancellation arrives at the loop's next await, and the local
clock declares a lease lost slightly before etcd expires it, so a deposed
leader's loop is stopped before a new leader starts its own -- unless the
loop blocks without awaiting. For writes that must never come from a
deposed leader, add `write_condition()` to the transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mesh.coordination import (
    Backoff,
    Condition,
    CoordinationStore,
    ElectionConfig,
    LeaderElection,
    LeaseLostError,
    SleepClock,
)
from mesh.errors import ErrorCode, MeshError
from mesh.ha.config import ReplicaConfig
from mesh.ha.records import LEADER_KEY
from mesh.ha.replica_lease import ReplicaLease

log = logging.getLogger(__name__)

SingletonLoop = Callable[[], Awaitable[None]]


@dataclass(eq=False)
class _Registration:
    name: str
    loop: SingletonLoop
    task: asyncio.Task[None] | None = None


class Leadership:
    """This replica's campaign and the singleton loops it runs while it leads."""

    def __init__(
        self,
        store: CoordinationStore,
        lease: ReplicaLease,
        *,
        router_id: str,
        config: ReplicaConfig,
        clock: SleepClock,
        rng: random.Random,
    ) -> None:
        self._lease = lease
        self._router_id = router_id
        self._config = config
        self._clock = clock
        self._rng = rng
        self._election = LeaderElection(
            store,
            lease.keeper,
            router_id,
            ElectionConfig(key=LEADER_KEY, retry=config.retry),
            clock=clock,
            rng=rng,
        )
        self._registrations: list[_Registration] = []
        self._leading = False
        self._listeners: list[Callable[[bool], None]] = []
        self.terms = 0
        """Terms this replica has won so far."""

    # -- the API ---------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while this replica leads: it won, and its lease is surely alive by the local clock."""
        return self._leading and self._election.is_leader

    def run_while_leader(self, name: str, loop: SingletonLoop) -> Callable[[], Awaitable[None]]:
        """Run `loop()` during every term of this replica; returns an async function that unregisters it.

        May be called before or after the router starts; a loop registered
        while leading starts at once.
        """
        registration = _Registration(name, loop)
        self._registrations.append(registration)
        if self._leading:
            self._start(registration)

        async def unregister() -> None:
            if registration in self._registrations:
                self._registrations.remove(registration)
            await self._stop(registration)

        return unregister

    def add_listener(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """Call `listener(is_leader)` on every change of leadership; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def write_condition(self) -> Condition:
        """A transaction condition that holds only while this replica's term lasts in the store.

        Raises MeshError(NOT_READY) when this replica is not the leader.
        """
        if not self.is_leader:
            raise MeshError(ErrorCode.NOT_READY, f"router {self._router_id} is not the leader")
        return Condition.held_by(LEADER_KEY, self._lease.keeper.lease_id)

    async def current_leader(self) -> str | None:
        """The leader's router id as the store has it (None for none). Raises MeshError when unreachable."""
        return await self._election.leader()

    # -- background work (owned by `Replica`) -------------------------------------

    async def run(self) -> None:
        """Campaign, lead, campaign again; until cancelled (then resign and stop the loops)."""
        backoff = Backoff(self._config.retry, self._rng)
        try:
            while True:
                await self._lease.wait_held()
                try:
                    await self._election.campaign()
                except LeaseLostError:
                    continue
                except MeshError as error:
                    log.warning("campaign failed (%s); retrying", error)
                    await self._clock.sleep(backoff.next_delay_s())
                    continue
                backoff.reset()
                await self._lead()
        finally:
            await self._abdicate()
            with contextlib.suppress(MeshError, LeaseLostError):
                await self._election.close()

    async def _lead(self) -> None:
        self.terms += 1
        self._set_leading(True)
        log.info("router %s is the leader (term %d here)", self._router_id, self.terms)
        for registration in list(self._registrations):
            self._start(registration)
        try:
            await self._election.wait_not_leader()
        finally:
            await self._abdicate()
        log.warning("router %s is no longer the leader", self._router_id)

    async def _abdicate(self) -> None:
        if not self._leading:
            return
        self._set_leading(False)
        await asyncio.gather(*(self._stop(r) for r in list(self._registrations)))

    def _set_leading(self, leading: bool) -> None:
        self._leading = leading
        for listener in list(self._listeners):
            try:
                listener(leading)
            except Exception:  # a listener's bug must not end the campaign
                log.exception("leadership listener failed")

    def _start(self, registration: _Registration) -> None:
        if registration.task is None or registration.task.done():
            registration.task = asyncio.get_running_loop().create_task(
                self._supervise(registration), name=f"singleton:{registration.name}"
            )

    async def _stop(self, registration: _Registration) -> None:
        task, registration.task = registration.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _supervise(self, registration: _Registration) -> None:
        while self.is_leader:
            try:
                await registration.loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # a crashing singleton must not cost the replica its leadership
                log.exception("singleton loop %s failed; restarting", registration.name)
            await self._clock.sleep(self._config.singleton_restart_s)
