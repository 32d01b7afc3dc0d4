"""A watch over an etcd prefix that survives disconnects.

One background task owns the gRPC watch stream and feeds a bounded queue the
consumer iterates. When the stream fails (etcd restarted, connection lost, the
server cancelled the watch) the task reconnects with jittered backoff and asks
for history from `last_revision + 1`, so nothing is lost or repeated:

- etcd sends every event of one revision in one response (fragmenting is
  off), and `last_revision` advances only after a whole response is queued;
  anything at or below it that a new stream replays is dropped;
- progress notifications are not used to advance `last_revision`: etcd 3.4
  before 3.4.24 may report a progress revision ahead of events it has not
  sent yet (etcd-io/etcd#15220).

Creating a stream has a deadline; waiting for the next event cannot (a quiet
prefix is normal), so a connection that dies silently is found by the
channel's HTTP/2 keepalive pings (`EtcdStoreConfig.keepalive_time_s`), which
fail the stream and start a resume.

If the history needed was compacted away, the watch re-reads the whole
prefix and emits one synthetic `EventKind.RESYNC` event carrying that snapshot
at its revision, then continues from the revision after it. A consumer that
replaces its view of the prefix with the snapshot converges with etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

import grpc
from aetcd import rpc
from aetcd.utils import prefix_range_end

from mesh.coordination.backoff import Backoff, BackoffPolicy
from mesh.coordination.clock import SleepClock
from mesh.coordination.store import WatchStream
from mesh.coordination.types import EventKind, KeyValue, Snapshot, WatchEvent
from mesh.errors import MeshError

log = logging.getLogger(__name__)

_END = object()


class _Compacted(Exception):
    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"history compacted up to revision {compact_revision}")
        self.compact_revision = compact_revision


class _StreamLost(Exception):
    pass


class ResumableWatch(WatchStream):
    """Events under one etcd key prefix, resumed across disconnects; see the module doc."""

    def __init__(
        self,
        *,
        open_stream: Callable[[], Awaitable[grpc.aio.StreamStreamCall]],
        read_snapshot: Callable[[], Awaitable[Snapshot]],
        key_prefix: bytes,
        decode: Callable[[rpc.KeyValue], KeyValue],
        relative_prefix: str,
        start_revision: int,
        create_timeout_s: float,
        backoff: BackoffPolicy,
        queue_size: int,
        clock: SleepClock,
        rng: random.Random,
        on_close: Callable[[ResumableWatch], None] = lambda _watch: None,
    ) -> None:
        self._open_stream = open_stream
        self._read_snapshot = read_snapshot
        self._key_prefix = key_prefix
        self._decode = decode
        self._relative_prefix = relative_prefix
        self._last_revision = start_revision - 1
        self._create_timeout_s = create_timeout_s
        self._backoff = Backoff(backoff, rng)
        self._clock = clock
        self._on_close = on_close
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=queue_size)
        self._connected = False
        self._streams_opened = 0
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"etcd-watch:{relative_prefix}")

    @property
    def last_revision(self) -> int:
        """Revision of the last event (or RESYNC) queued for the consumer."""
        return self._last_revision

    @property
    def connected(self) -> bool:
        """Whether a watch stream is established right now."""
        return self._connected

    @property
    def streams_opened(self) -> int:
        """Watch streams established so far; above 1 means the watch resumed."""
        return self._streams_opened

    async def __anext__(self) -> WatchEvent:
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END or self._closed:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, WatchEvent)
        return item

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_END)

    async def _run(self) -> None:
        try:
            while True:
                try:
                    await self._stream()
                except _Compacted as compacted:
                    log.info("watch %r: %s; resyncing", self._relative_prefix, compacted)
                    await self._resync()
                    continue
                except (grpc.aio.AioRpcError, _StreamLost, TimeoutError, MeshError) as error:
                    log.info(
                        "watch %r lost its stream (%s); resuming", self._relative_prefix, _describe(error)
                    )
                self._connected = False
                await self._clock.sleep(self._backoff.next_delay_s())
        except asyncio.CancelledError:
            raise
        except Exception as error:  # hand a bug to the consumer rather than hang it
            log.exception("watch %r failed", self._relative_prefix)
            await self._queue.put(error)

    async def _stream(self) -> None:
        """Run one watch stream until it fails; raises why."""
        call = await self._open_stream()
        try:
            create = rpc.WatchCreateRequest(
                key=self._key_prefix,
                range_end=prefix_range_end(self._key_prefix),
                start_revision=self._last_revision + 1,
            )
            async with asyncio.timeout(self._create_timeout_s):
                await call.write(rpc.WatchRequest(create_request=create))
                response = await call.read()
            self._check(response)
            if not response.created:
                raise _StreamLost("first watch response did not confirm creation")
            self._connected = True
            self._streams_opened += 1
            self._backoff.reset()
            while True:
                response = await call.read()
                self._check(response)
                await self._deliver(response)
        finally:
            self._connected = False
            call.cancel()

    def _check(self, response: object) -> None:
        if response is grpc.aio.EOF:
            raise _StreamLost("etcd ended the watch stream")
        assert isinstance(response, rpc.WatchResponse)
        if response.compact_revision:
            raise _Compacted(response.compact_revision)
        if response.canceled:
            raise _StreamLost(f"etcd cancelled the watch: {response.cancel_reason or 'no reason given'}")

    async def _deliver(self, response: rpc.WatchResponse) -> None:
        newest = self._last_revision
        for event in response.events:
            revision = event.kv.mod_revision
            if revision <= self._last_revision:
                continue  # replayed by a resumed stream: already delivered
            if event.type == rpc.Event.PUT:
                kv = self._decode(event.kv)
                await self._queue.put(WatchEvent(EventKind.PUT, kv.key, revision, kv))
            else:
                key = self._decode(event.kv).key
                await self._queue.put(WatchEvent(EventKind.DELETE, key, revision))
            newest = max(newest, revision)
        self._last_revision = newest

    async def _resync(self) -> None:
        """Re-read the prefix until it works, then emit it as one RESYNC event."""
        while True:
            try:
                snapshot = await self._read_snapshot()
                break
            except MeshError as error:
                log.info("watch %r resync read failed (%s); retrying", self._relative_prefix, error)
                await self._clock.sleep(self._backoff.next_delay_s())
        await self._queue.put(
            WatchEvent(EventKind.RESYNC, self._relative_prefix, snapshot.revision, snapshot=snapshot.items)
        )
        self._last_revision = snapshot.revision


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error) or type(error).__name__
