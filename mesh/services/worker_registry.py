"""`WorkerRegistry.Connect`: the stream each worker agent keeps to this router.

The first message must be a valid Hello. Every later message refreshes the
worker's liveness. One writer task per stream drains the session's outbox,
because a gRPC stream allows only one write in flight. Whatever ends the
stream (EOF, a bad message, a broken connection, silence, a newer stream for
the same worker) takes the worker out of routing at once and fails its open
tasks over to other workers.

Fencing: a worker silent past the timeout is ended with a Fence, and the
fence gate (`set_fence_gate`, the HA membership's fence book) is asked on
every Hello: a fenced incarnation gets a Fence instead of a Welcome, so it
comes back only as a new instance uid. Session listeners
(`add_session_listener`) hear of every attach, end and fence, synchronously
and after the registry changed; they must not block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from mesh.registry import OutboundTask, OutboxEntry, WorkerRegistry, WorkerSession
from mesh.stream_packing import pack_runs
from mesh.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)

MAX_ID_CHARS = 253
MAX_NAME_CHARS = 512


@dataclass(frozen=True)
class RegistrySettings:
    hello_timeout_s: float = 10.0
    """Time a new stream has to send its Hello."""
    status_interval_s: float = 0.2
    """Status cadence asked of workers (sent in Welcome)."""
    silence_timeout_s: float = 3.0
    """A worker silent this long leaves routing and its stream is closed."""
    write_coalesce_s: float = 0.002
    """Under load (other tasks open on the stream), how long a task waits for
    company before it is written: each stream write costs a thread hop inside
    gRPC, far more than the bytes it carries, so a shared write raises
    throughput. 0 writes every task at once."""
    flush_timeout_s: float = 1.0
    """Time a closing stream gets to flush its last messages."""


def _text_problem(value: str, field: str, *, required: bool, limit: int = MAX_NAME_CHARS) -> str | None:
    if required and not value.strip():
        return f"{field} must not be empty"
    if len(value) > limit:
        return f"{field} is longer than {limit} characters"
    if any(ord(ch) < 32 for ch in value):
        return f"{field} holds control characters"
    return None


def status_problem(status: registry_pb2.WorkerStatus) -> str | None:
    """Why a status report cannot be accepted, or None."""
    for value, field in (
        (status.bundle, "status.bundle"),
        (status.machine_profile, "status.machine_profile"),
        (status.pool, "status.pool"),
        (status.bundle_config_hash, "status.bundle_config_hash"),
    ):
        problem = _text_problem(value, field, required=False)
        if problem:
            return problem
    for index, gpu in enumerate(status.gpus):
        if not math.isfinite(gpu.utilization_pct) or not 0.0 <= gpu.utilization_pct <= 100.0:
            return f"status.gpus[{index}].utilization_pct must be a number in [0, 100]"
        if gpu.memory_used_bytes > gpu.memory_total_bytes > 0:
            return f"status.gpus[{index}].memory_used_bytes exceeds memory_total_bytes"
    for index, model in enumerate(status.models):
        problem = _text_problem(model.name, f"status.models[{index}].name", required=True)
        if problem:
            return problem
    return None


def hello_problem(hello: registry_pb2.Hello) -> str | None:
    """Why a Hello cannot register a worker, or None."""
    return (
        _text_problem(hello.worker_id, "worker_id", required=True, limit=MAX_ID_CHARS)
        or _text_problem(hello.instance_uid, "instance_uid", required=True, limit=MAX_ID_CHARS)
        or _text_problem(hello.backend, "backend", required=False)
        or _text_problem(hello.agent_version, "agent_version", required=False)
        or status_problem(hello.status)
    )


def result_problem(result: registry_pb2.TaskResult) -> str | None:
    if not result.task_id:
        return "result.task_id must not be empty"
    for value, field in ((result.queue_ms, "result.queue_ms"), (result.inference_ms, "result.inference_ms")):
        if not math.isfinite(value) or value < 0:
            return f"{field} must be a finite, non-negative number"
    return None


MAX_TASKS_PER_WRITE = 256


class SessionListener(Protocol):
    """Hears what happens to worker sessions; called synchronously, so it must not block."""

    def session_attached(self, session: WorkerSession) -> None:
        """`session` is now its worker's current stream on this router."""

    def session_detached(self, session: WorkerSession) -> None:
        """`session` ended (it may have been replaced by a newer one already)."""

    def session_fenced(self, session: WorkerSession, reason: str) -> None:
        """`session`'s incarnation was fenced here; it ends right after."""


FenceGate = Callable[[str, str], bool]
"""`(worker_id, instance_uid) -> fenced?`, asked on every Hello."""


def coalesce_tasks(entries: list[OutboxEntry]) -> list[registry_pb2.RouterMessage | None]:
    """The same entries in the same order as messages: each run of tasks becomes one
    message (a TaskBatch for two or more), each Task built in place inside it."""
    return pack_runs(
        entries,
        OutboundTask,
        registry_pb2.RouterMessage,
        single="task",
        batch="task_batch",
        items="tasks",
        limit=MAX_TASKS_PER_WRITE,
    )


class WorkerRegistryService(registry_pb2_grpc.WorkerRegistryServicer):
    def __init__(
        self,
        registry: WorkerRegistry,
        *,
        router_id: str,
        settings: RegistrySettings,
        config_epoch: Callable[[], int] = lambda: 0,
        on_config_ack: Callable[[WorkerSession, registry_pb2.ConfigAck], None] | None = None,
        on_attach: Callable[[WorkerSession], None] | None = None,
    ) -> None:
        self._registry = registry
        self._router_id = router_id
        self._settings = settings
        self._config_epoch = config_epoch
        self._on_config_ack = on_config_ack
        self._on_attach = on_attach
        self._handlers: dict[WorkerSession, asyncio.Task] = {}
        self._listeners: list[SessionListener] = []
        self._fence_gate: FenceGate = lambda _worker_id, _instance_uid: False
        self.accepting = True

    def add_session_listener(self, listener: SessionListener) -> None:
        self._listeners.append(listener)

    def set_fence_gate(self, gate: FenceGate) -> None:
        """Refuse a Hello whose (worker_id, instance_uid) `gate` says is fenced."""
        self._fence_gate = gate

    def _notify(self, event: str, *args: object) -> None:
        for listener in self._listeners:
            try:
                getattr(listener, event)(*args)
            except Exception:  # a listener's bug must not cost a worker its stream
                log.exception("session listener %s failed", event)

    async def Connect(self, request_iterator, context: grpc.aio.ServicerContext):
        if not self.accepting:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "router is draining")
        try:
            first = await asyncio.wait_for(context.read(), self._settings.hello_timeout_s)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no Hello within the hello timeout")
        if first is grpc.aio.EOF:
            return
        if first.WhichOneof("kind") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello")
        problem = hello_problem(first.hello)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid Hello: {problem}")
        if self._fence_gate(first.hello.worker_id, first.hello.instance_uid):
            # A stale incarnation (paused past the silence timeout, then
            # resumed): a Fence instead of a Welcome makes the agent take a
            # new instance uid and say Hello again.
            reason = f"instance {first.hello.instance_uid} of worker {first.hello.worker_id} is fenced"
            log.info("refused Hello: %s", reason)
            await context.write(registry_pb2.RouterMessage(fence=registry_pb2.Fence(reason=reason)))
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            context.set_details(f"{reason}; say Hello with a new instance_uid")
            return

        session = self._registry.new_session(first.hello)
        previous = self._registry.attach(session)
        if previous is not None:
            # The same worker id came back on a new stream (a restart or a
            # reconnect racing the old stream's close): the newest wins.
            self._end(previous, "replaced by a newer stream of the same worker")
        self._handlers[session] = asyncio.current_task()
        if self._on_attach is not None:
            self._on_attach(session)
        self._notify("session_attached", session)
        log.info(
            "worker %s registered (instance %s, bundle %s, profile %s)",
            session.worker_id,
            session.instance_uid,
            session.status.bundle,
            session.status.machine_profile,
        )
        writer = asyncio.create_task(self._write(session, context), name=f"writer-{session.worker_id}")
        reason = "stream closed"
        try:
            session.send(
                registry_pb2.RouterMessage(
                    welcome=registry_pb2.Welcome(
                        router_id=self._router_id,
                        config_epoch=self._config_epoch(),
                        status_interval_ms=int(self._settings.status_interval_s * 1000),
                        silence_timeout_ms=int(self._settings.silence_timeout_s * 1000),
                    )
                )
            )
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    break
                session.touch()
                problem = self._handle(session, message)
                if problem:
                    # Not context.abort(): the writer may have a write in
                    # flight, and a stream takes one operation at a time. The
                    # status goes out when the handler returns, after the
                    # writer has stopped.
                    reason = f"invalid message: {problem}"
                    context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
                    context.set_details(problem)
                    break
        except asyncio.CancelledError:
            reason = session.close_reason or "stream cancelled"
            raise
        finally:
            self._handlers.pop(session, None)
            session.close(reason)
            self._registry.detach(session)
            self._notify("session_detached", session)
            # close() queued the end marker: let the writer flush what is
            # queued before it (a Fence, say), but never wait long for it.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(writer, self._settings.flush_timeout_s)
            log.info("worker %s left: %s", session.worker_id, reason)

    def _handle(self, session: WorkerSession, message: registry_pb2.WorkerMessage) -> str | None:
        kind = message.WhichOneof("kind")
        if kind == "result":
            problem = result_problem(message.result)
            if problem:
                return problem
            session.resolve(message.result)
        elif kind == "result_batch":
            for result in message.result_batch.results:
                problem = result_problem(result)
                if problem:
                    return problem
                session.resolve(result)
        elif kind == "status":
            problem = status_problem(message.status)
            if problem:
                return problem
            session.apply_status(message.status)
        elif kind == "config_ack":
            session.acked_epoch = max(session.acked_epoch, message.config_ack.epoch)
            if self._on_config_ack is not None:
                self._on_config_ack(session, message.config_ack)
        elif kind == "drain_notice":
            session.set_draining()
        elif kind == "hello":
            return "Hello sent twice on one stream"
        else:
            return "empty WorkerMessage"
        return None

    async def _write(self, session: WorkerSession, context: grpc.aio.ServicerContext) -> None:
        outbox = session.outbox
        coalesce_s = self._settings.write_coalesce_s
        try:
            while True:
                first = await outbox.get()
                if first is None:
                    return
                if outbox.empty() and len(session.pending) > 1 and coalesce_s > 0:
                    # Other requests to this worker are in flight, so more are
                    # arriving: hold the write for a short window and let them
                    # leave together. A lone task (nothing else open) goes at
                    # once, so an idle mesh adds no latency. (Waiting only until
                    # the worker answers something, Nagle's rule, and waiting
                    # until half of the open tasks queued were both measured
                    # and lost: they lock the stream into small batches.)
                    await asyncio.sleep(coalesce_s)
                # Several entries may have queued while the last write was in
                # flight: consecutive tasks leave in one TaskBatch, since each
                # stream write costs far more than the bytes it carries.
                pending = [first]
                while not outbox.empty() and len(pending) < MAX_TASKS_PER_WRITE:
                    pending.append(outbox.get_nowait())
                for message in coalesce_tasks(pending):
                    if message is None:
                        return
                    await context.write(message)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a broken stream ends the session, not the router
            log.info("stream to worker %s broke: %s", session.worker_id, error)
            self._end(session, f"write failed: {error}")

    def _end(self, session: WorkerSession, reason: str, *, fence: bool = False) -> None:
        """Take a session out now and stop its stream handler.

        With `fence`, the worker is told first that this incarnation is no
        longer accepted, so it comes back only through a fresh Hello.
        """
        if fence and not session.closed:
            session.send(registry_pb2.RouterMessage(fence=registry_pb2.Fence(reason=reason)))
            self._notify("session_fenced", session, reason)
        session.close(reason)
        self._registry.detach(session)
        handler = self._handlers.get(session)
        if handler is not None and handler is not asyncio.current_task():
            handler.cancel()

    def eject_silent(self) -> list[str]:
        """Close the streams of workers silent past the timeout; returns their ids."""
        ejected = []
        for session in self._registry.silent_sessions(self._settings.silence_timeout_s):
            self._end(session, f"silent for more than {self._settings.silence_timeout_s:g} s", fence=True)
            ejected.append(session.worker_id)
        return ejected

    def fence_incarnation(self, worker_id: str, instance_uid: str, reason: str) -> bool:
        """End the worker's stream with a Fence if it is that incarnation; returns whether it was."""
        session = self._registry.get(worker_id)
        if session is None or session.closed or session.instance_uid != instance_uid:
            return False
        self._end(session, reason, fence=True)
        return True

    def close_all(self, reason: str) -> None:
        for session in list(self._handlers):
            self._end(session, reason)
