"""The loop that applies the batching policy: queues, deadlines, backend calls.

Queued tasks wait in one FIFO per `BatchKey`. The loop asks `decide_batch`
about each key, starts the batches it says to run (at most
`max_concurrent_batches` at a time, keys served round-robin), and otherwise
sleeps until the earliest "look again" time or the next arrival. Each batch
is one backend call; each task's outcome goes to `on_outcome` with its queue
and inference time.

Deadlines: a task past its deadline is never run. Expired tasks are weeded
out when a batch forms and by a periodic sweep of the queues, and answered
DEADLINE_EXCEEDED so the router hears at once rather than at its own timeout.

Cancelled tasks leave the queue at once; a cancelled task that is already
running finishes with its batch and its outcome is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mesh.clock import Clock
from mesh.errors import ErrorCode, MeshError
from worker_agent.backends.base import Backend, BatchTarget
from worker_agent.batching import BatchKey, BatchLimits, decide_batch

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class PendingTask:
    """A task accepted and not yet answered."""

    task_id: str
    key: BatchKey
    request: Any
    """The EncodeRequest, ScoreRequest or ExtractRequest, opaque here."""
    items: int
    tokens: int
    """Estimated tokens, for the batch budget."""
    enqueued_at_s: float
    deadline_s: float
    reply_to: Any
    """Where the outcome goes (the stream the task came on); opaque here."""
    running: bool = False
    done: bool = False
    cancelled: bool = False


OutcomeSink = Callable[[PendingTask, Any, float, float], None]
"""`(task, response or MeshError, queue_s, inference_s)`; called once per task not cancelled."""


class BatchLoop:
    """Owns the queues and the running batches of one agent."""

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock,
        limits_for: Callable[[BatchKey], BatchLimits],
        capacity: int,
        max_concurrent_batches: int,
        expiry_sweep_s: float,
        on_outcome: OutcomeSink,
        on_change: Callable[[], None],
    ) -> None:
        self._backend = backend
        self._clock = clock
        self._limits_for = limits_for
        self.capacity = capacity
        self._max_batches = max_concurrent_batches
        self._sweep_s = expiry_sweep_s
        self._on_outcome = on_outcome
        self._on_change = on_change
        self._queues: dict[BatchKey, deque[PendingTask]] = {}
        self._batches: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._next_sweep_s = 0.0
        self.queued = 0
        """Tasks waiting in the queues."""
        self.running = 0
        """Tasks inside running batches."""
        self.depth_by_model: dict[str, int] = {}
        """Tasks queued or running, by canonical model id."""
        self.items_by_model: dict[str, int] = {}
        """Items inside those tasks, by canonical model id."""

    # -- accounting -------------------------------------------------------------

    @property
    def full(self) -> bool:
        return self.queued >= self.capacity

    @property
    def in_flight(self) -> int:
        return self.queued + self.running

    def _count(self, task: PendingTask, sign: int) -> None:
        model_id = task.key.model_id
        self.depth_by_model[model_id] = self.depth_by_model.get(model_id, 0) + sign
        self.items_by_model[model_id] = self.items_by_model.get(model_id, 0) + sign * task.items

    def _settle(self, task: PendingTask) -> None:
        """The task leaves the agent's books (answered, dropped or cancelled)."""
        task.done = True
        self._count(task, -1)
        if not self.queued and not self.running:
            self._idle.set()

    # -- intake -----------------------------------------------------------------

    def submit(self, task: PendingTask) -> bool:
        """Queue a task; False when the queue is at capacity (nothing queued then)."""
        if self.queued >= self.capacity:
            return False
        queue = self._queues.get(task.key)
        if queue is None:
            queue = self._queues[task.key] = deque()
        queue.append(task)
        self.queued += 1
        self._count(task, +1)
        self._idle.clear()
        self._wake.set()
        self._on_change()
        return True

    def cancel(self, task: PendingTask) -> None:
        """Withdraw a task: out of the queue now, or its result dropped if it runs."""
        if task.done or task.cancelled:
            return
        task.cancelled = True
        if task.running:
            return
        queue = self._queues.get(task.key)
        if queue is not None:
            queue.remove(task)
            if not queue:
                del self._queues[task.key]
        self.queued -= 1
        self._settle(task)
        self._on_change()

    def fail_queued(self, error: MeshError) -> int:
        """Answer every queued task with `error` (a drain that ran out of time); returns how many."""
        failed = 0
        for queue in self._queues.values():
            for task in queue:
                self._answer(task, error, 0.0)
                failed += 1
        self._queues.clear()
        self.queued = 0
        if failed:
            if not self.running:
                self._idle.set()
            self._on_change()
        return failed

    async def wait_idle(self) -> None:
        """Until nothing is queued or running."""
        await self._idle.wait()

    def _answer(self, task: PendingTask, outcome: Any, queue_s: float, inference_s: float = 0.0) -> None:
        self._settle(task)
        if not task.cancelled:
            self._on_outcome(task, outcome, queue_s, inference_s)

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> None:
        """Form and start batches until cancelled; running batches are cancelled with it."""
        try:
            while True:
                self._wake.clear()
                wake_at_s = self._dispatch(self._clock.monotonic())
                if self._wake.is_set():
                    continue
                if wake_at_s is None:
                    await self._wake.wait()
                    continue
                delay_s = wake_at_s - self._clock.monotonic()
                if delay_s > 0:
                    try:
                        async with asyncio.timeout(delay_s):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
        finally:
            batches = list(self._batches)
            for batch in batches:
                batch.cancel()
            await asyncio.gather(*batches, return_exceptions=True)

    def _dispatch(self, now_s: float) -> float | None:
        """Start every batch the policy says to run; returns when to look again."""
        if self.queued and now_s >= self._next_sweep_s:
            self._drop_expired(now_s)
            self._next_sweep_s = now_s + self._sweep_s
        wake_at_s: float | None = None
        started = True
        while started and self._queues and len(self._batches) < self._max_batches:
            started = False
            for key in list(self._queues):
                if len(self._batches) >= self._max_batches:
                    break
                queue = self._queues[key]
                decision = decide_batch(queue, self._limits_for(key), now_s)
                if decision.size:
                    batch = [queue.popleft() for _ in range(decision.size)]
                    # Served keys go to the back, so one busy key cannot starve the others.
                    del self._queues[key]
                    if queue:
                        self._queues[key] = queue
                    self._start(key, batch, now_s)
                    started = True
                elif decision.wake_at_s is not None and (wake_at_s is None or decision.wake_at_s < wake_at_s):
                    wake_at_s = decision.wake_at_s
        if self.queued and (wake_at_s is None or self._next_sweep_s < wake_at_s):
            # Expiries must be noticed even while the backend is busy or stalled.
            wake_at_s = self._next_sweep_s
        return wake_at_s

    def _drop_expired(self, now_s: float) -> None:
        expired_any = False
        for key in list(self._queues):
            queue = self._queues[key]
            if not any(task.deadline_s <= now_s for task in queue):
                continue
            kept: deque[PendingTask] = deque()
            for task in queue:
                if task.deadline_s <= now_s:
                    self.queued -= 1
                    self._answer(task, _expired(task, now_s), now_s - task.enqueued_at_s)
                    expired_any = True
                else:
                    kept.append(task)
            if kept:
                self._queues[key] = kept
            else:
                del self._queues[key]
        if expired_any:
            self._on_change()

    def _start(self, key: BatchKey, batch: list[PendingTask], now_s: float) -> None:
        runnable = [task for task in batch if task.deadline_s > now_s]
        # Books first: answering an expired task checks for idleness.
        self.queued -= len(batch)
        self.running += len(runnable)
        for task in batch:
            if task.deadline_s <= now_s:
                self._answer(task, _expired(task, now_s), now_s - task.enqueued_at_s)
            else:
                task.running = True
        if not runnable:
            self._on_change()
            return
        runner = asyncio.create_task(
            self._run_batch(key, runnable), name=f"batch-{key.model_id}-{key.operation}"
        )
        self._batches.add(runner)
        runner.add_done_callback(self._batch_finished)

    def _batch_finished(self, runner: asyncio.Task[None]) -> None:
        self._batches.discard(runner)
        self._wake.set()
        if not runner.cancelled() and runner.exception() is not None:
            log.error("batch runner failed", exc_info=runner.exception())

    async def _run_batch(self, key: BatchKey, batch: list[PendingTask]) -> None:
        target = BatchTarget(key.model_id, key.profile, key.lora)
        requests = [task.request for task in batch]
        started_s = self._clock.monotonic()
        try:
            if key.operation == "encode":
                outcomes = await self._backend.encode(target, requests)
            elif key.operation == "score":
                outcomes = await self._backend.score(target, requests)
            else:
                outcomes = await self._backend.extract(target, requests)
            if len(outcomes) != len(batch):
                raise MeshError(
                    ErrorCode.INTERNAL, f"backend answered {len(outcomes)} outcomes for {len(batch)} requests"
                )
        except MeshError as error:
            outcomes = [error] * len(batch)
        except Exception as error:
            log.exception(
                "backend %s failed a %s batch of %s", self._backend.name, key.operation, key.model_id
            )
            outcomes = [MeshError(ErrorCode.INTERNAL, f"backend failed: {error}")] * len(batch)
        finally:
            self.running -= len(batch)
        finished_s = self._clock.monotonic()
        inference_s = finished_s - started_s
        for task, outcome in zip(batch, outcomes, strict=True):
            task.running = False
            self._answer(task, outcome, started_s - task.enqueued_at_s, inference_s)
        self._on_change()


def _expired(task: PendingTask, now_s: float) -> MeshError:
    waited_ms = (now_s - task.enqueued_at_s) * 1000
    return MeshError(
        ErrorCode.DEADLINE_EXCEEDED,
        f"task {task.task_id} expired after {waited_ms:.0f} ms in the queue; not run",
    )
