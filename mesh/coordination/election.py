"""Leader election on one key, for the singleton loops (pool assignment, GC).

The leader is whoever created `key` (default `leader`, holding the winner's
candidate id) under a lease it keeps alive. Campaigning is a create-if-absent;
a loser watches the key and tries again when it is deleted -- by the
leader's resignation, by a revoke, or by its lease expiring -- so a new leader
takes over within a watch round trip of the old lease ending.

A leader stops being one (`is_leader` false, `wait_not_leader()` returns) when
its lease is lost by the keeper's local clock, or when the key is deleted or
rewritten by someone else. Code running singleton work should check
`is_leader` before each externally visible step and stop at once when
`wait_not_leader()` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from mesh.coordination.backoff import Backoff, BackoffPolicy
from mesh.coordination.clock import SleepClock, SystemSleepClock
from mesh.coordination.lease_keeper import LeaseKeeper
from mesh.coordination.store import CoordinationStore
from mesh.coordination.types import Condition, Delete, EventKind, KeyValue, LeaseLostError, Snapshot
from mesh.errors import ErrorCode, MeshError

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class ElectionConfig:
    """Where and how to campaign."""

    key: str = "leader"
    """Key (relative to the store prefix) whose holder is the leader."""
    retry: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(initial_s=0.1, max_s=2.0))
    """Backoff between campaign attempts while the store is unreachable."""


class LeaderElection:
    """One candidate's view of one election. The caller owns the `LeaseKeeper`."""

    def __init__(
        self,
        store: CoordinationStore,
        keeper: LeaseKeeper,
        candidate_id: str,
        config: ElectionConfig | None = None,
        *,
        clock: SleepClock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not candidate_id:
            raise ValueError("candidate_id must be non-empty")
        self._store = store
        self._keeper = keeper
        self._candidate_id = candidate_id
        self._config = config or ElectionConfig()
        self._clock = clock or SystemSleepClock()
        self._rng = rng or random.Random()
        self._won_revision = 0
        self._not_leader = asyncio.Event()
        self._not_leader.set()
        self._guard: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        return self._config.key

    @property
    def is_leader(self) -> bool:
        return not self._not_leader.is_set() and self._keeper.is_held

    async def wait_not_leader(self) -> None:
        """Return once this candidate is not (or no longer) the leader."""
        await self._not_leader.wait()

    async def campaign(self) -> None:
        """Return once this candidate leads. Raises LeaseLostError if the keeper loses its lease."""
        if self.is_leader:
            return
        backoff = Backoff(self._config.retry, self._rng)
        me = self._candidate_id.encode()
        while True:
            self._keeper.check_held()
            lease_id = self._keeper.lease_id
            try:
                result = await self._store.create_if_absent(self.key, me, lease_id=lease_id)
            except MeshError as error:
                if error.code != ErrorCode.STORE_UNAVAILABLE:
                    raise
                await self._race_lease(self._clock.sleep(backoff.next_delay_s()))
                continue
            backoff.reset()
            if result.succeeded:
                await self._won(result.revision)
                return
            holder = result.current.get(self.key)
            if holder is not None and holder.value == me and holder.lease_id == lease_id:
                # An earlier attempt whose answer was lost did succeed.
                await self._won(holder.mod_revision)
                return
            await self._race_lease(self._wait_vacant(result.revision))

    async def resign(self) -> None:
        """Stop leading and delete the key (only if it is still the one this candidate wrote)."""
        await self._stop_guard()
        was_leader = not self._not_leader.is_set()
        self._not_leader.set()
        if was_leader:
            await self._store.txn([Condition.at_revision(self.key, self._won_revision)], [Delete(self.key)])

    async def close(self) -> None:
        """Resign if leading (best effort) and stop background work."""
        try:
            await self.resign()
        except MeshError as error:
            log.info("could not resign cleanly (%s); the lease will end it", error)

    async def leader(self) -> str | None:
        """The current leader's candidate id, or None."""
        kv = await self._store.get(self.key)
        return _holder(kv)

    async def observe(self) -> AsyncIterator[str | None]:
        """The current leader (None for none), then every change. Close it with `aclose()`."""
        snapshot = await self._store.get_prefix(self.key)
        current = _holder(snapshot.get(self.key))
        yield current
        async with self._store.watch_prefix(self.key, start_revision=snapshot.revision + 1) as watch:
            async for event in watch:
                if event.kind == EventKind.RESYNC:
                    holder = _holder(Snapshot(event.snapshot, event.revision).get(self.key))
                elif event.key != self.key:
                    continue
                else:
                    holder = _holder(event.kv)
                if holder != current:
                    current = holder
                    yield current

    # --- internals -------------------------------------------------------

    async def _won(self, revision: int) -> None:
        self._won_revision = revision
        self._not_leader.clear()
        await self._stop_guard()
        self._guard = asyncio.get_running_loop().create_task(self._watch_leadership(revision))
        log.info("%s leads %r from revision %d", self._candidate_id, self.key, revision)

    async def _stop_guard(self) -> None:
        guard, self._guard = self._guard, None
        if guard is not None and guard is not asyncio.current_task():
            guard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await guard

    async def _watch_leadership(self, revision: int) -> None:
        try:
            await self._race_lease(self._wait_vacant(revision, rewrite_counts=True))
            why = "the leader key was deleted or taken"
        except LeaseLostError:
            why = "the lease was lost"
        log.warning("%s no longer leads %r: %s", self._candidate_id, self.key, why)
        self._not_leader.set()

    async def _wait_vacant(self, revision: int, *, rewrite_counts: bool = False) -> None:
        """Return once the key is deleted after `revision` (or, with `rewrite_counts`, rewritten)."""
        async with self._store.watch_prefix(self.key, start_revision=revision + 1) as watch:
            async for event in watch:
                if event.kind == EventKind.RESYNC:
                    kv = Snapshot(event.snapshot, event.revision).get(self.key)
                    if kv is None or (rewrite_counts and kv.mod_revision != self._won_revision):
                        return
                elif event.key == self.key and (event.kind == EventKind.DELETE or rewrite_counts):
                    return

    async def _race_lease(self, work: Awaitable[_T]) -> _T:
        """Run `work` unless the keeper's lease is lost first (then raise LeaseLostError)."""
        work_task = asyncio.ensure_future(work)
        lost_task = asyncio.ensure_future(self._keeper.wait_lost())
        try:
            await asyncio.wait({work_task, lost_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work_task, lost_task):
                task.cancel()
            await asyncio.gather(work_task, lost_task, return_exceptions=True)
        if work_task.done() and not work_task.cancelled():
            return work_task.result()
        raise LeaseLostError("lease lost while campaigning or leading")


def _holder(kv: KeyValue | None) -> str | None:
    return kv.value.decode("utf-8", errors="replace") if kv is not None else None
