"""`PrefixMirror`: a local copy of one store prefix, kept current by list-then-watch.

The copy is replaced wholesale on every (re)start and on a RESYNC, and
patched per event otherwise, so it converges with the store whatever
happened to the watch. `on_change()` runs synchronously after each change
is applied. While the store is unreachable the copy keeps its last state:
readers get the best known view rather than nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping

from mesh.coordination import Backoff, BackoffPolicy, CoordinationStore, EventKind, KeyValue, SleepClock
from mesh.errors import MeshError

log = logging.getLogger(__name__)


class PrefixMirror:
    """Mirror of `prefix`; `start()` / `stop()` own its watch task."""

    def __init__(
        self,
        store: CoordinationStore,
        prefix: str,
        clock: SleepClock,
        *,
        on_change: Callable[[], None] = lambda: None,
        retry: BackoffPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._prefix = prefix
        self._clock = clock
        self._on_change = on_change
        self._retry = retry or BackoffPolicy(initial_s=0.1, max_s=2.0)
        self._rng = rng or random.Random()
        self._items: dict[str, KeyValue] = {}
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self.revision = 0
        """Store revision the copy reflects."""

    @property
    def items(self) -> Mapping[str, KeyValue]:
        """Key -> value as last seen (a live view: copy it to keep it)."""
        return self._items

    @property
    def synced(self) -> bool:
        """Whether the prefix has been read at least once."""
        return self._synced.is_set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"mirror:{self._prefix}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_synced(self, timeout_s: float) -> bool:
        """Wait until the prefix has been read once; False if `timeout_s` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._synced.wait()
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        backoff = Backoff(self._retry, self._rng)
        while True:
            try:
                snapshot = await self._store.get_prefix(self._prefix)
                self._replace(snapshot.items, snapshot.revision)
                self._synced.set()
                start = snapshot.revision + 1
                async with self._store.watch_prefix(self._prefix, start_revision=start) as events:
                    backoff.reset()
                    async for event in events:
                        if event.kind is EventKind.RESYNC:
                            self._replace(event.snapshot, event.revision)
                            continue
                        if event.kind is EventKind.PUT and event.kv is not None:
                            self._items[event.key] = event.kv
                        elif event.kind is EventKind.DELETE:
                            self._items.pop(event.key, None)
                        self._changed(event.revision)
            except MeshError as error:
                log.info(
                    "watch of %s interrupted (%s); keeping the last view and retrying", self._prefix, error
                )
            except Exception:  # the last view is better than none: keep it and start over
                log.exception("mirror of %s failed; retrying", self._prefix)
            await self._clock.sleep(backoff.next_delay_s())

    def _replace(self, items: tuple[KeyValue, ...], revision: int) -> None:
        self._items = {kv.key: kv for kv in items}
        self._changed(revision)

    def _changed(self, revision: int) -> None:
        self.revision = revision
        try:
            self._on_change()
        except Exception:  # a consumer's bug must not stop the mirror
            log.exception("mirror consumer of %s failed", self._prefix)
