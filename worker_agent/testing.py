"""Test support: a fake router that worker agents register with.

`FakeRouter` is a real `WorkerRegistry` servicer on a real grpc.aio server
(127.0.0.1, port 0), scripted by the test: it records everything workers
send (Hello, status, results, acks, drain notices) and sends whatever the
test queues (tasks, cancels, config updates, drains, fences). A fake, not a
mock: the agent under test speaks the same protocol as to a real router.

    async with FakeRouter.serving() as router:
        agent = WorkerAgent(AgentConfig(routers=(router.address,)), FakeBackend(), load_catalog())
        await agent.start()
        hello = await router.wait_hello()
        result = await router.run_task(encode_task(MINILM_MODEL_ID, ["hello"]))
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import grpc

from mesh.v1 import common_pb2, inference_pb2, registry_pb2, registry_pb2_grpc

# Agents ping every keepalive interval; a server that forbids that would GOAWAY them.
SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
]


@dataclass(eq=False)
class FakeStream:
    """One worker stream as the fake router holds it."""

    hello: registry_pb2.Hello
    outbox: asyncio.Queue[registry_pb2.RouterMessage | None] = field(default_factory=asyncio.Queue)
    closed: bool = False


class FakeRouter(registry_pb2_grpc.WorkerRegistryServicer):
    """Records what workers send; sends what the test scripts."""

    def __init__(self, *, router_id: str = "fake-router", status_interval_ms: int = 50) -> None:
        self.router_id = router_id
        self.status_interval_ms = status_interval_ms
        self.address = ""
        self.hellos: list[registry_pb2.Hello] = []
        self.statuses: list[tuple[float, registry_pb2.WorkerStatus]] = []
        """(monotonic arrival time, report), in arrival order."""
        self.results: dict[str, registry_pb2.TaskResult] = {}
        self.result_order: list[str] = []
        """Task ids in the order their results arrived."""
        self.result_messages: list[int] = []
        """Results carried by each result or ResultBatch message, in arrival order."""
        self.acks: list[registry_pb2.ConfigAck] = []
        self.drain_notices: list[registry_pb2.DrainNotice] = []
        self.streams: list[FakeStream] = []
        self._changed = asyncio.Condition()

    # -- the servicer -------------------------------------------------------------

    async def Connect(self, request_iterator, context):
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("kind") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello")
        stream = FakeStream(first.hello)
        self.streams.append(stream)
        await self._record(lambda: self.hellos.append(first.hello))
        await context.write(
            registry_pb2.RouterMessage(
                welcome=registry_pb2.Welcome(
                    router_id=self.router_id, status_interval_ms=self.status_interval_ms
                )
            )
        )
        writer = asyncio.create_task(self._write(stream, context))
        try:
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    return
                await self._receive(message)
        finally:
            stream.closed = True
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    async def _write(self, stream: FakeStream, context) -> None:
        while True:
            message = await stream.outbox.get()
            if message is None:
                return
            await context.write(message)

    async def _receive(self, message: registry_pb2.WorkerMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "status":
            await self._record(lambda: self.statuses.append((time.monotonic(), message.status)))
        elif kind in ("result", "result_batch"):
            results = [message.result] if kind == "result" else list(message.result_batch.results)

            def add() -> None:
                self.result_messages.append(len(results))
                for result in results:
                    self.results[result.task_id] = result
                    self.result_order.append(result.task_id)

            await self._record(add)
        elif kind == "config_ack":
            await self._record(lambda: self.acks.append(message.config_ack))
        elif kind == "drain_notice":
            await self._record(lambda: self.drain_notices.append(message.drain_notice))

    async def _record(self, change: Callable[[], None]) -> None:
        async with self._changed:
            change()
            self._changed.notify_all()

    # -- what tests call ------------------------------------------------------------

    @property
    def stream(self) -> FakeStream:
        """The newest stream."""
        if not self.streams:
            raise AssertionError("no worker has connected")
        return self.streams[-1]

    def send(self, message: registry_pb2.RouterMessage) -> None:
        """Queue a message on the newest stream."""
        self.stream.outbox.put_nowait(message)

    def send_task(self, task: registry_pb2.Task) -> None:
        self.send(registry_pb2.RouterMessage(task=task))

    def send_task_batch(self, tasks: list[registry_pb2.Task]) -> None:
        """Several tasks in one TaskBatch message, as a router packs tasks that queued together."""
        self.send(registry_pb2.RouterMessage(task_batch=registry_pb2.TaskBatch(tasks=tasks)))

    def cancel(self, task_id: str) -> None:
        self.send(registry_pb2.RouterMessage(cancel=registry_pb2.Cancel(task_id=task_id)))

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Until `predicate()` holds over what was recorded; TimeoutError past the deadline."""
        async with asyncio.timeout(timeout_s):
            async with self._changed:
                await self._changed.wait_for(predicate)

    async def wait_hello(self, count: int = 1, timeout_s: float = 5.0) -> registry_pb2.Hello:
        """The `count`-th Hello (1-based), once it arrived."""
        await self.wait_for(lambda: len(self.hellos) >= count, timeout_s)
        return self.hellos[count - 1]

    async def wait_result(self, task_id: str, timeout_s: float = 5.0) -> registry_pb2.TaskResult:
        await self.wait_for(lambda: task_id in self.results, timeout_s)
        return self.results[task_id]

    async def wait_status(
        self, predicate: Callable[[registry_pb2.WorkerStatus], bool], timeout_s: float = 5.0
    ) -> registry_pb2.WorkerStatus:
        """The first status report (from now on or already received) that satisfies `predicate`."""
        matches: list[registry_pb2.WorkerStatus] = []

        def found() -> bool:
            matches[:] = [status for _, status in self.statuses if predicate(status)]
            return bool(matches)

        await self.wait_for(found, timeout_s)
        return matches[0]

    async def run_task(self, task: registry_pb2.Task, timeout_s: float = 5.0) -> registry_pb2.TaskResult:
        self.send_task(task)
        return await self.wait_result(task.task_id, timeout_s)

    @classmethod
    @contextlib.asynccontextmanager
    async def serving(cls, port: int = 0, **kwargs) -> AsyncIterator[FakeRouter]:
        """A FakeRouter on a started grpc.aio server at 127.0.0.1:`port`, stopped on exit."""
        router = cls(**kwargs)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        registry_pb2_grpc.add_WorkerRegistryServicer_to_server(router, server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        if not bound:
            raise OSError(f"cannot bind 127.0.0.1:{port}")
        router.address = f"127.0.0.1:{bound}"
        await server.start()
        try:
            yield router
        finally:
            for stream in router.streams:
                stream.outbox.put_nowait(None)
            await server.stop(0)


_task_ids = itertools.count(1)


def new_task_id() -> str:
    return f"task-{next(_task_ids)}"


def encode_task(
    model_id: str,
    texts: Sequence[str],
    *,
    task_id: str | None = None,
    budget_ms: int = 10_000,
    lora: str = "",
    output_dtype: int = common_pb2.DTYPE_UNSPECIFIED,
    instruction: str | None = None,
    profile: str = "",
) -> registry_pb2.Task:
    request = inference_pb2.EncodeRequest(
        model=model_id,
        items=[common_pb2.Item(id=f"item-{index}", text=text) for index, text in enumerate(texts)],
        output_dtype=output_dtype,
        options=inference_pb2.EncodeOptions(lora=lora),
    )
    if instruction is not None:
        request.instruction = instruction
    return registry_pb2.Task(
        task_id=task_id or new_task_id(),
        model_id=model_id,
        profile=profile,
        budget_ms=budget_ms,
        encode=request,
    )


def score_task(
    model_id: str, query: str, texts: Sequence[str], *, task_id: str | None = None, budget_ms: int = 10_000
) -> registry_pb2.Task:
    request = inference_pb2.ScoreRequest(
        model=model_id,
        query=common_pb2.Item(id="query", text=query),
        items=[common_pb2.Item(id=f"doc-{index}", text=text) for index, text in enumerate(texts)],
    )
    return registry_pb2.Task(
        task_id=task_id or new_task_id(), model_id=model_id, budget_ms=budget_ms, score=request
    )


def extract_task(
    model_id: str,
    texts: Sequence[str],
    labels: Sequence[str] = (),
    *,
    task_id: str | None = None,
    budget_ms: int = 10_000,
) -> registry_pb2.Task:
    request = inference_pb2.ExtractRequest(
        model=model_id,
        items=[common_pb2.Item(id=f"item-{index}", text=text) for index, text in enumerate(texts)],
        labels=list(labels),
    )
    return registry_pb2.Task(
        task_id=task_id or new_task_id(), model_id=model_id, budget_ms=budget_ms, extract=request
    )
