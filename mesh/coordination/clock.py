"""`mesh.clock`'s clocks, plus a sleep that honours them.

Lease expiry, keepalive cadence and reconnect backoff wait as well as read
time, so this package takes a `SleepClock`. `ManualSleepClock` wakes its
sleepers as tests advance it; both are the `mesh.clock` classes underneath,
so one clock can drive a test's registry and its store alike.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Protocol

from mesh.clock import Clock, ManualClock, SystemClock


class SleepClock(Clock, Protocol):
    """A `mesh.clock.Clock` that can also wait."""

    async def sleep(self, delay_s: float) -> None:
        """Return once `delay_s` seconds have passed on this clock."""
        ...


class SystemSleepClock(SystemClock):
    """The process's clocks and `asyncio.sleep`."""

    async def sleep(self, delay_s: float) -> None:
        await asyncio.sleep(max(0.0, delay_s))


class ManualSleepClock(ManualClock):
    """A `ManualClock` whose sleepers wake when `advance` passes their deadline.

    A sleep of zero or less still yields to the loop once, as `asyncio.sleep(0)` does.
    """

    def __init__(self, start_s: float = 1000.0) -> None:
        super().__init__(start_s)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def sleep(self, delay_s: float) -> None:
        if delay_s <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.monotonic() + delay_s, next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        while self._sleepers and self._sleepers[0][0] <= self.monotonic():
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def sleepers(self) -> int:
        """Sleeps still pending (cancelled ones drop out when their deadline passes)."""
        return sum(1 for _, _, future in self._sleepers if not future.done())
