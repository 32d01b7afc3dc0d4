"""The live registry: which workers hold a stream to this router, and their state.

Fed only by the workers' own streams. A worker leaves routing the moment its
stream closes, or when it has been silent past the silence timeout; nothing
here waits for etcd. Routing reads immutable `WorkerView` snapshots, rebuilt
lazily when something changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mesh.clock import Clock
from mesh.errors import ErrorCode, MeshError
from mesh.routing.types import ModelLoad, ModelState, WorkerView
from mesh.v1 import registry_pb2

log = logging.getLogger(__name__)

_MODEL_STATES: dict[int, ModelState] = {
    registry_pb2.MODEL_STATE_AVAILABLE: ModelState.AVAILABLE,
    registry_pb2.MODEL_STATE_LOADING: ModelState.LOADING,
    registry_pb2.MODEL_STATE_LOADED: ModelState.LOADED,
    registry_pb2.MODEL_STATE_UNLOADING: ModelState.UNLOADING,
    registry_pb2.MODEL_STATE_FAILED: ModelState.FAILED,
}


def model_state(value: int) -> ModelState:
    return _MODEL_STATES.get(value, ModelState.AVAILABLE)


def model_loads(status: registry_pb2.WorkerStatus) -> tuple[dict[str, ModelLoad], int]:
    """The models of a status report by lower-cased id, and their total queue depth."""
    models: dict[str, ModelLoad] = {}
    reported_depth = 0
    for model in status.models:
        models[model.name.lower()] = ModelLoad(
            state=model_state(model.state),
            queue_depth=model.queue_depth,
            pending_items=model.queue_pending_items,
        )
        reported_depth += model.queue_depth
    return models, reported_depth


def view_from_status(
    worker_id: str,
    instance_uid: str,
    backend: str,
    status: registry_pb2.WorkerStatus,
    *,
    inflight: int,
    draining: bool,
    closed: bool,
    pool_override: str | None,
    loads: tuple[dict[str, ModelLoad], int] | None = None,
) -> WorkerView:
    """The routing row for a worker from its last status and the router's own bookkeeping.

    `loads` is `model_loads(status)` when the caller already has it: it changes
    only with a report, while the view changes with every task sent.
    """
    models, reported_depth = loads if loads is not None else model_loads(status)
    pool = status.pool if pool_override is None else pool_override
    return WorkerView(
        worker_id=worker_id,
        instance_uid=instance_uid,
        bundle=status.bundle,
        machine_profile=status.machine_profile.lower(),
        pool=pool.lower(),
        ready=status.ready,
        draining=draining or status.draining,
        ejected=closed,
        saturated=status.saturated,
        # Reports lag by up to a status interval; the router's own in-flight
        # count is exact for what it sent, so take whichever is larger.
        queue_depth=max(reported_depth, inflight),
        queue_capacity=status.queue_capacity,
        max_batch_requests=max(1, status.max_batch_requests),
        gpu_count=status.gpu_count,
        models=models,
        backend=backend,
    )


@dataclass(slots=True)
class OutboundTask:
    """A task waiting in a session's outbox.

    The writer builds its Task in place, inside the message it leaves in (a
    TaskBatch when several wait), so the request is copied once on its way
    to the wire.
    """

    task_id: str
    model_id: str
    profile: str
    budget_ms: int
    operation: str
    """The Task field the request goes in: "encode", "score" or "extract"."""
    request: Any

    def fill(self, task: registry_pb2.Task) -> None:
        task.task_id = self.task_id
        task.model_id = self.model_id
        task.profile = self.profile
        task.budget_ms = self.budget_ms
        getattr(task, self.operation).CopyFrom(self.request)


OutboxEntry = registry_pb2.RouterMessage | OutboundTask | None
"""What a session's writer sends next; None ends the stream."""


class Outbox:
    """What a session's single writer task sends next: a FIFO with one waiting reader.

    asyncio.Queue does the same with more bookkeeping (maxsize, join
    counters, a deque of getters) than one reader needs, on a path every
    request takes.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[OutboxEntry] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, message: OutboxEntry) -> None:
        self._items.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> OutboxEntry:
        """The oldest message, waiting for one; for the writer task only."""
        items = self._items
        while not items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return items.popleft()

    def get_nowait(self) -> OutboxEntry:
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def __len__(self) -> int:
        return len(self._items)


_VIEWS_PER_SESSION = 64
"""Routing rows kept per session (one per in-flight count seen since the last report)."""


class WorkerSession:
    """One worker's stream on this router: its state, its outbox and its open tasks."""

    def __init__(
        self,
        hello: registry_pb2.Hello,
        *,
        clock: Clock,
        on_change: Callable[[], None],
        on_load_change: Callable[[], None],
    ) -> None:
        self.worker_id = hello.worker_id
        self.instance_uid = hello.instance_uid
        self.backend = hello.backend
        self.agent_version = hello.agent_version
        self.status = registry_pb2.WorkerStatus()
        self.status.CopyFrom(hello.status)
        self._loads = model_loads(self.status)
        self._clock = clock
        self._on_change = on_change
        self._on_load_change = on_load_change
        self.connected_at_s = clock.monotonic()
        self.last_seen_s = self.connected_at_s
        self.acked_epoch = 0
        self.pending: dict[str, asyncio.Future[registry_pb2.TaskResult]] = {}
        self.outbox = Outbox()
        self.draining = False
        self.closed = False
        self.close_reason = ""
        self.pool_override: str | None = None
        self._views: dict[int, WorkerView] = {}
        """This worker's routing rows by the router's in-flight count, for the state since the
        last change: the count moves with every task, the rest only with a report."""

    # -- state ---------------------------------------------------------------

    def view(self) -> WorkerView:
        inflight = len(self.pending)
        views = self._views
        view = views.get(inflight)
        if view is None:
            if len(views) >= _VIEWS_PER_SESSION:
                views.clear()
            view = views[inflight] = view_from_status(
                self.worker_id,
                self.instance_uid,
                self.backend,
                self.status,
                inflight=inflight,
                draining=self.draining,
                closed=self.closed,
                pool_override=self.pool_override,
                loads=self._loads,
            )
        return view

    def _changed(self) -> None:
        self._views.clear()
        self._on_change()

    def _load_changed(self) -> None:
        # Tasks opened and closed by this router move its routing row, not the
        # worker's state: only the snapshot is stale, nobody is told.
        self._on_load_change()

    def touch(self) -> None:
        self.last_seen_s = self._clock.monotonic()

    def apply_status(self, status: registry_pb2.WorkerStatus) -> None:
        if status.seq and self.status.seq and status.seq < self.status.seq:
            return  # an older report overtaken by a newer one
        self.status.CopyFrom(status)
        self._loads = model_loads(self.status)
        self._changed()

    def set_draining(self) -> None:
        self.draining = True
        self._changed()

    def set_pool_override(self, pool: str | None) -> None:
        if pool != self.pool_override:
            self.pool_override = pool
            self._changed()

    # -- outbound ------------------------------------------------------------

    def send(self, message: registry_pb2.RouterMessage | OutboundTask) -> None:
        """Queue a message (or a task) for the session's single writer task."""
        if self.closed:
            raise MeshError(ErrorCode.WORKER_FAILED, f"worker {self.worker_id} is gone")
        self.outbox.put(message)

    def open_task(self, task_id: str) -> asyncio.Future[registry_pb2.TaskResult]:
        future: asyncio.Future[registry_pb2.TaskResult] = asyncio.get_running_loop().create_future()
        self.pending[task_id] = future
        self._load_changed()
        return future

    def finish_task(self, task_id: str) -> None:
        if self.pending.pop(task_id, None) is not None:
            self._load_changed()

    def resolve(self, result: registry_pb2.TaskResult) -> bool:
        """Hand a worker's result to whoever awaits it; False when nobody does."""
        future = self.pending.get(result.task_id)
        if future is None or future.done():
            return False
        future.set_result(result)
        return True

    def close(self, reason: str) -> None:
        """Take the session out of routing and fail its open tasks over."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        failure = MeshError(ErrorCode.WORKER_FAILED, f"worker {self.worker_id} left: {reason}")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(failure)
        self.outbox.put(None)  # wakes the writer so it ends
        self._changed()


class WorkerRegistry:
    """Every worker session of this router, keyed by worker id."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._sessions: dict[str, WorkerSession] = {}
        self._snapshot: tuple[WorkerView, ...] | None = None
        self._listeners: list[Callable[[], None]] = []
        self.fleet_version = 0
        """Bumped on every change of the fleet (see `add_listener`), never by load alone:
        what routing filters read is unchanged while it is."""

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called (synchronously) after a change of the fleet: a worker joined or
        left, reported, drained or moved pool; not for the router's own tasks
        opening and closing. Keep it cheap."""
        self._listeners.append(listener)

    def _on_change(self) -> None:
        self._snapshot = None
        self.fleet_version += 1
        for listener in self._listeners:
            listener()

    def _on_load_change(self) -> None:
        self._snapshot = None

    def new_session(self, hello: registry_pb2.Hello) -> WorkerSession:
        return WorkerSession(
            hello, clock=self._clock, on_change=self._on_change, on_load_change=self._on_load_change
        )

    def attach(self, session: WorkerSession) -> WorkerSession | None:
        """Make `session` the worker's current one; returns the one it replaces."""
        previous = self._sessions.get(session.worker_id)
        self._sessions[session.worker_id] = session
        self._on_change()
        return previous

    def detach(self, session: WorkerSession) -> None:
        """Forget `session` if it is still the worker's current one."""
        if self._sessions.get(session.worker_id) is session:
            del self._sessions[session.worker_id]
            self._on_change()

    def get(self, worker_id: str) -> WorkerSession | None:
        return self._sessions.get(worker_id)

    def __iter__(self) -> Iterator[WorkerSession]:
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)

    def snapshot(self) -> tuple[WorkerView, ...]:
        snapshot = self._snapshot
        if snapshot is None:
            snapshot = tuple(s.view() for s in self._sessions.values() if not s.closed)
            self._snapshot = snapshot
        return snapshot

    def silent_sessions(self, timeout_s: float) -> list[WorkerSession]:
        """Sessions that sent nothing for longer than `timeout_s`."""
        cutoff = self._clock.monotonic() - timeout_s
        return [s for s in self._sessions.values() if not s.closed and s.last_seen_s < cutoff]
