"""The registration client: one stream to one router, kept open for the agent's life.

`RouterLink.run` dials its router, says Hello, waits for Welcome, then serves
the stream until it ends, and dials again after a jittered exponential
backoff; links to other routers are independent tasks and live on. A stream
that had been welcomed resets the backoff.

On one stream (a `LinkSession`):
- exactly one writer task writes, draining the session's outbox (results,
  acks, notices) and then the status report when one is due: gRPC allows
  only one write in flight per stream. Status goes out every interval and
  at once on a change; changes of queue depth alone are coalesced to at most
  one report per `status_coalesce_s`, so a busy worker does not send a status
  per task.
- the reader hands Task, Cancel, ConfigUpdate and Drain to the agent and
  ends the stream on Fence (the agent takes a new instance uid and the link
  says Hello again). A router that knows the incarnation is fenced answers
  the Hello itself with a Fence instead of a Welcome, to the same effect.

A link whose router left the discovered set is retired (`retire()`): it
keeps a stream that still works and only stops redialling.

Deadlines: Hello/Welcome and every write have one. Reads on an established
stream have none, because a router with nothing to send is silent by
design; the channel's keepalive pings are what notice a dead router then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from mesh.clock import Clock
from mesh.stream_packing import pack_runs
from mesh.v1 import registry_pb2, registry_pb2_grpc
from worker_agent.config import LinkSettings, ReconnectPolicy

log = logging.getLogger(__name__)


def reconnect_delay_s(attempt: int, policy: ReconnectPolicy, rng: random.Random) -> float:
    """Delay before attempt `attempt` (0-based count of consecutive failures)."""
    base_s = min(policy.max_s, policy.initial_s * policy.multiplier ** min(attempt, 64))
    return base_s * (1.0 - policy.jitter * rng.random())


def channel_options(settings: LinkSettings) -> list[tuple[str, Any]]:
    """Keepalive on the channel, so a dead router ends the stream instead of hanging it."""
    return [
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # The link has its own backoff; the channel must not add a second one.
        ("grpc.enable_retries", 0),
        # The stream carries batches both ways; gRPC may favour throughput over
        # per-message latency (the router's server is tuned the same way).
        ("grpc.optimization_target", "throughput"),
    ]


MAX_RESULTS_PER_WRITE = 256


@dataclass(slots=True)
class TaskOutcome:
    """A finished task's answer waiting in a stream's outbox.

    The writer builds its TaskResult in place, inside the message it leaves
    in, so the response is copied once on its way to the wire.
    """

    task_id: str
    operation: str
    """The TaskResult field the answer goes in ("encode", "score", "extract"); "" for an error."""
    answer: Any
    """The operation's response message, or an ErrorDetail."""
    queue_ms: float = 0.0
    inference_ms: float = 0.0

    def fill(self, result: registry_pb2.TaskResult) -> None:
        result.task_id = self.task_id
        result.queue_ms = self.queue_ms
        result.inference_ms = self.inference_ms
        getattr(result, self.operation or "error").CopyFrom(self.answer)


OutboxEntry = registry_pb2.WorkerMessage | TaskOutcome


def coalesce_results(outbox: deque[OutboxEntry], count: int) -> list[registry_pb2.WorkerMessage]:
    """Take `count` entries off the outbox, in order, as messages: a run of task
    outcomes becomes one ResultBatch (a single one, a plain result).

    Each stream write costs far more than the bytes it carries, and a batch
    finishing answers many tasks at once: one write for all of them.
    """
    return pack_runs(
        (outbox.popleft() for _ in range(count)),
        TaskOutcome,
        registry_pb2.WorkerMessage,
        single="result",
        batch="result_batch",
        items="results",
        limit=MAX_RESULTS_PER_WRITE,
    )


class Fenced(Exception):
    """The router fenced this incarnation; the link must Hello again as a new one."""

    def __init__(self, reason: str, instance_uid: str) -> None:
        super().__init__(reason)
        self.instance_uid = instance_uid
        """The incarnation the router fenced: the one this link said Hello as."""


class ProtocolViolation(Exception):
    """The router broke the stream's contract (no Welcome first, say)."""


class LinkSession:
    """One welcomed stream to one router: its outbox and its open tasks."""

    def __init__(self, address: str, welcome: registry_pb2.Welcome, settings: LinkSettings) -> None:
        self.address = address
        self.router_id = welcome.router_id
        self.status_interval_s = (
            welcome.status_interval_ms / 1000.0 if welcome.status_interval_ms else settings.status_interval_s
        )
        self.tasks: dict[str, Any] = {}
        """Open tasks that came on this stream, by task id (the agent's records)."""
        self.closed = False
        self._outbox: deque[OutboxEntry] = deque()
        self._wake = asyncio.Event()
        # Changes between Hello and Welcome reached no session: report them soon.
        self.status_changed = True
        """Something in the status changed since the last report."""
        self.status_urgent = False
        """A change other than queue depth is waiting to be reported."""

    def send(self, message: OutboxEntry) -> None:
        """Queue a message or a task's outcome for the writer; dropped once the stream is gone."""
        if self.closed:
            return
        self._outbox.append(message)
        self._wake.set()

    def note_status_change(self, urgent: bool) -> None:
        if urgent:
            if not self.status_urgent:
                self.status_urgent = True
                self._wake.set()
        elif not self.status_changed:
            # Later depth changes ride on the report this one schedules.
            self.status_changed = True
            self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._outbox.clear()
        self._wake.set()


class LinkHost(Protocol):
    """What a link needs from its agent."""

    def hello(self) -> registry_pb2.Hello: ...

    def status_report(self) -> registry_pb2.WorkerStatus: ...

    def open_session(self, session: LinkSession) -> None: ...

    def close_session(self, session: LinkSession) -> None: ...

    def accept_task(self, session: LinkSession, task: registry_pb2.Task, received_at_s: float) -> None: ...

    def cancel_task(self, session: LinkSession, task_id: str) -> None: ...

    def apply_config(self, session: LinkSession, update: registry_pb2.ConfigUpdate) -> None: ...

    def begin_drain(self, drain: registry_pb2.Drain) -> None: ...

    def rotate_instance(self, reason: str, fenced_instance_uid: str = "") -> None: ...


class RouterLink:
    """Keeps one registration stream to one router address."""

    def __init__(
        self, address: str, host: LinkHost, settings: LinkSettings, *, clock: Clock, rng: random.Random
    ) -> None:
        self.address = address
        self._host = host
        self._settings = settings
        self._clock = clock
        self._rng = rng
        self._closing = False
        self._retired = False
        self._interrupt = asyncio.Event()
        self._session: LinkSession | None = None
        self._welcomed = False
        self._hello_uid = ""
        self.sessions_opened = 0
        """Streams welcomed so far (tests and diagnostics)."""

    @property
    def connected(self) -> bool:
        return self._session is not None and not self._session.closed

    @property
    def retired(self) -> bool:
        return self._retired

    def request_close(self) -> None:
        """Flush, half-close the stream and stop reconnecting; `run` returns soon after."""
        self._closing = True
        self._interrupt.set()
        if self._session is not None:
            self._session._wake.set()

    def retire(self) -> None:
        """Stop redialling: a live stream is served until it ends, then `run` returns.

        For a router that left the discovered set. Its stream, if it still
        works, is the best evidence that the router is alive, so it is kept.
        """
        self._retired = True
        self._interrupt.set()

    def reinstate(self) -> None:
        """Undo `retire()` while `run` has not returned yet."""
        self._retired = False

    async def run(self) -> None:
        """Connect, serve, reconnect; until cancelled or closed."""
        failures = 0
        while not (self._closing or self._retired):
            self._welcomed = False
            try:
                await self._serve_one_stream()
            except asyncio.CancelledError:
                raise
            except Fenced as fence:
                log.warning("router %s fenced this worker (%s); registering again", self.address, fence)
                self._host.rotate_instance(str(fence), fenced_instance_uid=fence.instance_uid)
            except grpc.aio.AioRpcError as error:
                # UNAVAILABLE is a router that is down or restarting; anything else
                # (a refused Hello, say) needs an operator, so it is louder.
                level = logging.INFO if error.code() == grpc.StatusCode.UNAVAILABLE else logging.WARNING
                log.log(
                    level,
                    "stream to router %s failed: %s %s",
                    self.address,
                    error.code().name,
                    error.details(),
                )
            except (TimeoutError, ProtocolViolation, ConnectionError) as error:
                log.info("stream to router %s failed: %s", self.address, error or type(error).__name__)
            except Exception:
                log.exception("stream to router %s failed unexpectedly", self.address)
            if self._closing or self._retired:
                return
            failures = 0 if self._welcomed else failures + 1
            delay_s = reconnect_delay_s(failures, self._settings.reconnect, self._rng)
            log.debug("reconnecting to %s in %.3f s (attempt %d)", self.address, delay_s, failures)
            self._interrupt.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self._interrupt.wait()  # a close or retirement cuts the wait short

    async def _serve_one_stream(self) -> None:
        settings = self._settings
        channel = grpc.aio.insecure_channel(self.address, options=channel_options(settings))
        call = None
        try:
            stub = registry_pb2_grpc.WorkerRegistryStub(channel)
            call = stub.Connect(wait_for_ready=False)
            hello = self._host.hello()
            self._hello_uid = hello.instance_uid
            async with asyncio.timeout(settings.connect_timeout_s):
                await call.write(registry_pb2.WorkerMessage(hello=hello))
                first = await call.read()
            if first is grpc.aio.EOF:
                raise ConnectionError("router ended the stream before its Welcome")
            if first.WhichOneof("kind") == "fence":
                raise Fenced(first.fence.reason or "fenced", hello.instance_uid)
            if first.WhichOneof("kind") != "welcome":
                raise ProtocolViolation(f"router sent {first.WhichOneof('kind')} before Welcome")
            self._welcomed = True
            session = LinkSession(self.address, first.welcome, settings)
            await self._serve_session(call, session)
        finally:
            if call is not None:
                call.cancel()
            with contextlib.suppress(Exception):
                await channel.close(grace=None)

    async def _serve_session(self, call: Any, session: LinkSession) -> None:
        self._session = session
        self.sessions_opened += 1
        self._host.open_session(session)
        log.info("registered with router %s (%s)", session.router_id or "?", self.address)
        reader = asyncio.create_task(self._read_loop(call, session), name=f"read-{self.address}")
        writer = asyncio.create_task(self._write_loop(call, session), name=f"write-{self.address}")
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if (
                writer in done
                and not writer.cancelled()
                and writer.exception() is None
                and reader not in done
            ):
                # A graceful close half-closed the stream: give the router a moment to hang up.
                await asyncio.wait({reader}, timeout=self._settings.close_timeout_s)
        finally:
            session.close()
            self._host.close_session(session)
            self._session = None
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
        # The reader's ending says why the stream ended (EOF, an RPC error, a Fence);
        # a writer failure (a write deadline) counts when the reader saw nothing.
        for task in (reader, writer):
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _read_loop(self, call: Any, session: LinkSession) -> None:
        host = self._host
        clock = self._clock
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                if not self._closing:
                    raise ConnectionError("router ended the stream")
                return
            kind = message.WhichOneof("kind")
            try:
                if kind == "task":
                    host.accept_task(session, message.task, clock.monotonic())
                elif kind == "task_batch":
                    received_at_s = clock.monotonic()
                    for task in message.task_batch.tasks:
                        host.accept_task(session, task, received_at_s)
                elif kind == "cancel":
                    host.cancel_task(session, message.cancel.task_id)
                elif kind == "config_update":
                    host.apply_config(session, message.config_update)
                elif kind == "drain":
                    host.begin_drain(message.drain)
                elif kind == "fence":
                    raise Fenced(message.fence.reason or "fenced", self._hello_uid)
                elif kind == "welcome":
                    if message.welcome.status_interval_ms:
                        session.status_interval_s = message.welcome.status_interval_ms / 1000.0
                else:
                    log.warning("router %s sent an empty message; ignored", self.address)
            except Fenced:
                raise
            except Exception:
                log.exception("handling a %s message from router %s failed", kind, self.address)

    async def _write_loop(self, call: Any, session: LinkSession) -> None:
        settings = self._settings
        clock = self._clock
        host = self._host
        outbox = session._outbox
        wake = session._wake
        write_timeout_s = settings.write_timeout_s
        coalesce_s = settings.status_coalesce_s
        # The Hello carried a full status; the first report is due one interval later.
        last_status_s = clock.monotonic()
        result_coalesce_s = settings.result_coalesce_s
        while True:
            wake.clear()
            if outbox and result_coalesce_s > 0 and session.tasks and not self._closing:
                # More results are on their way (tasks of this stream are still
                # open): let them share the write. A last result goes at once.
                await asyncio.sleep(result_coalesce_s)
            # Only what was queued when the cycle began: under sustained load the
            # outbox never empties, and status reports must still get their turn.
            for message in coalesce_results(outbox, len(outbox)):
                async with asyncio.timeout(write_timeout_s):
                    await call.write(message)
            if self._closing and not outbox:
                async with asyncio.timeout(write_timeout_s):
                    await call.done_writing()
                return
            now_s = clock.monotonic()
            due_s = last_status_s + session.status_interval_s
            if session.status_changed and not session.status_urgent:
                due_s = min(due_s, last_status_s + coalesce_s)
            if session.status_urgent or now_s >= due_s:
                session.status_urgent = False
                session.status_changed = False
                report = registry_pb2.WorkerMessage(status=host.status_report())
                async with asyncio.timeout(write_timeout_s):
                    await call.write(report)
                last_status_s = clock.monotonic()
                continue
            if wake.is_set() or outbox:
                continue
            try:
                async with asyncio.timeout(due_s - now_s):
                    await wake.wait()
            except TimeoutError:
                pass
