"""The fleet as pool assignment sees it: every worker of the mesh, wherever it is connected.

A `FleetSource` answers `workers()` (a snapshot) and calls a wake-up
callback when the fleet may have changed. `LocalFleet` reads this router's
own registry: the freshest view, health included, of the workers this
replica holds. `StoreFleet` reads every replica's worker registrations
(`workers/{worker}/{router}`, written by mesh.ha), so the leader also sees
workers connected only to other replicas. `MergedFleet` unions sources by
worker id, the first source winning: local streams stay authoritative for
the workers this replica holds.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import Protocol

from mesh.coordination import CoordinationStore, SleepClock
from mesh.ha import WORKERS_PREFIX, WorkerRecord
from mesh.pools.assignment import FleetWorker
from mesh.pools.mirror import PrefixMirror
from mesh.registry import WorkerRegistry, WorkerSession

log = logging.getLogger(__name__)

Wake = Callable[[], None]


class FleetSource(Protocol):
    async def workers(self) -> list[FleetWorker]:
        """Every worker this source knows, healthy or not."""
        ...

    def subscribe(self, wake: Wake) -> Callable[[], None]:
        """Call `wake()` (cheap, synchronous) whenever the fleet may have changed; returns an unsubscribe."""
        ...

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the source has read its view once; False if `timeout_s` passed first."""
        ...


def fleet_worker_of(session: WorkerSession) -> FleetWorker:
    """The assignment row of one of this router's worker sessions.

    `static_pool` is the worker's own `--pool` (status.pool), never the
    override pool assignment set: assignment must see the reservation the
    worker made, not the one it made itself.
    """
    view = session.view()
    return FleetWorker(
        worker_id=session.worker_id,
        machine_profile=view.machine_profile,
        bundle=(view.bundle or "default").lower(),
        static_pool=session.status.pool.strip().lower(),
        healthy=view.healthy and not session.closed,
    )


class LocalFleet:
    """The workers holding a stream to this router."""

    def __init__(self, registry: WorkerRegistry) -> None:
        self._registry = registry
        self._subscribers: list[Wake] = []
        registry.add_listener(self._on_registry_change)

    async def workers(self) -> list[FleetWorker]:
        return [fleet_worker_of(session) for session in self._registry if not session.closed]

    def subscribe(self, wake: Wake) -> Callable[[], None]:
        self._subscribers.append(wake)

        def unsubscribe() -> None:
            if wake in self._subscribers:
                self._subscribers.remove(wake)

        return unsubscribe

    async def wait_ready(self, timeout_s: float) -> bool:
        return True  # the registry is in memory

    def _on_registry_change(self) -> None:
        # Runs on every status report: only wake (setting an event). The
        # assigner compares what it reads and skips passes for mere queue-depth noise.
        for wake in self._subscribers:
            wake()


class StoreFleet:
    """Workers registered in the store by any replica (`workers/{worker}/{router}`, mesh.ha).

    A registration means some replica holds a live stream of the worker, so
    it counts as healthy: readiness and draining are known only to the
    replicas holding the streams (put a `LocalFleet` first in a
    `MergedFleet` for the workers this replica holds). Read from a mirror
    of the prefix, so a pass costs no store round trip.
    """

    def __init__(
        self, store: CoordinationStore, clock: SleepClock, *, rng: random.Random | None = None
    ) -> None:
        self._subscribers: list[Wake] = []
        self._cache: list[FleetWorker] | None = None
        self._mirror = PrefixMirror(store, WORKERS_PREFIX, clock, on_change=self._on_change, rng=rng)

    def start(self) -> None:
        self._mirror.start()

    async def stop(self) -> None:
        await self._mirror.stop()

    async def wait_ready(self, timeout_s: float) -> bool:
        return await self._mirror.wait_synced(timeout_s)

    async def workers(self) -> list[FleetWorker]:
        # Asked on every fleet wake-up of the leader; registrations change far less often.
        if self._cache is None:
            self._cache = self._decode()
        return list(self._cache)

    def _decode(self) -> list[FleetWorker]:
        found: dict[str, FleetWorker] = {}
        # Sorted keys: with one record per replica, the same replica's record wins every time.
        for key in sorted(self._mirror.items):
            try:
                record = WorkerRecord.decode(self._mirror.items[key].value)
            except ValueError as error:
                log.warning("ignoring worker registration %s: %s", key, error)
                continue
            found.setdefault(
                record.worker_id,
                FleetWorker(
                    worker_id=record.worker_id,
                    machine_profile=record.machine_profile.strip().lower(),
                    bundle=(record.bundle or "default").strip().lower(),
                    static_pool=record.pool.strip().lower(),
                    healthy=True,
                ),
            )
        return list(found.values())

    def subscribe(self, wake: Wake) -> Callable[[], None]:
        self._subscribers.append(wake)

        def unsubscribe() -> None:
            if wake in self._subscribers:
                self._subscribers.remove(wake)

        return unsubscribe

    def _on_change(self) -> None:
        self._cache = None
        for wake in list(self._subscribers):
            wake()


class MergedFleet:
    """Several sources as one: by worker id, the first source that knows a worker wins."""

    def __init__(self, sources: Sequence[FleetSource]) -> None:
        if not sources:
            raise ValueError("MergedFleet needs at least one source")
        self._sources = tuple(sources)

    async def workers(self) -> list[FleetWorker]:
        merged: dict[str, FleetWorker] = {}
        for source in self._sources:
            for worker in await source.workers():
                merged.setdefault(worker.worker_id, worker)
        return sorted(merged.values(), key=lambda worker: worker.worker_id)

    async def wait_ready(self, timeout_s: float) -> bool:
        results = await asyncio.gather(*(source.wait_ready(timeout_s) for source in self._sources))
        return all(results)

    def subscribe(self, wake: Wake) -> Callable[[], None]:
        unsubscribers = [source.subscribe(wake) for source in self._sources]

        def unsubscribe() -> None:
            for undo in unsubscribers:
                undo()

        return unsubscribe
