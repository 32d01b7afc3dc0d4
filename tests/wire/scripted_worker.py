"""A scripted worker for router wire tests: speaks the registry stream with
behaviour each test decides (answer, never answer, drop the stream, ...).

A fake, not a mock: it dials the real router over a real gRPC stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

import grpc

from mesh.v1 import common_pb2, inference_pb2, registry_pb2, registry_pb2_grpc

Handler = Callable[[registry_pb2.Task], Awaitable[registry_pb2.TaskResult | None]]


def dense_for(text: str, dims: int = 4) -> common_pb2.Tensor:
    """A tiny deterministic vector so tests can tell which worker answered."""
    import struct

    values = [float((hash(text) >> (8 * i)) & 0xFF) for i in range(dims)]
    return common_pb2.Tensor(
        dtype=common_pb2.DTYPE_FLOAT32, shape=[dims], data=struct.pack(f"<{dims}f", *values)
    )


def answer_encode(worker_id: str) -> Handler:
    async def handle(task: registry_pb2.Task) -> registry_pb2.TaskResult:
        response = inference_pb2.EncodeResponse(model=task.model_id)
        for item in task.encode.items:
            response.items.add(id=item.id, dense=dense_for(f"{worker_id}:{item.text}"))
        return registry_pb2.TaskResult(task_id=task.task_id, encode=response, queue_ms=0.5, inference_ms=1.0)

    return handle


def status(
    *,
    bundle: str = "default",
    machine_profile: str = "cpu",
    pool: str = "",
    models: dict[str, int] | None = None,
    ready: bool = True,
    max_batch_requests: int = 8,
) -> registry_pb2.WorkerStatus:
    models = (
        {"sentence-transformers/all-MiniLM-L6-v2": registry_pb2.MODEL_STATE_LOADED}
        if models is None
        else models
    )
    return registry_pb2.WorkerStatus(
        ready=ready,
        bundle=bundle,
        machine_profile=machine_profile,
        pool=pool,
        gpu_count=1,
        max_batch_requests=max_batch_requests,
        queue_capacity=64,
        models=[registry_pb2.ModelStatus(name=name, state=state) for name, state in models.items()],
    )


class ScriptedWorker:
    def __init__(
        self, address: str, worker_id: str, worker_status: registry_pb2.WorkerStatus, handler: Handler
    ):
        self.address = address
        self.worker_id = worker_id
        self.instance_uid = uuid.uuid4().hex
        self.status = worker_status
        self.handler = handler
        self.tasks: list[registry_pb2.Task] = []
        self.task_batches: list[int] = []
        """Sizes of the TaskBatch messages received (tasks that came packed together)."""
        self.cancels: list[str] = []
        self.drains: list[registry_pb2.Drain] = []
        self.fences: list[registry_pb2.Fence] = []
        self.welcome: registry_pb2.Welcome | None = None
        self.ended: grpc.aio.AioRpcError | None = None
        self.send_status = True
        self._channel: grpc.aio.Channel | None = None
        self._call = None
        self._outbox: asyncio.Queue[registry_pb2.WorkerMessage | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._running: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.address)
        stub = registry_pb2_grpc.WorkerRegistryStub(self._channel)
        self._call = stub.Connect(self._messages())
        self._outbox.put_nowait(
            registry_pb2.WorkerMessage(
                hello=registry_pb2.Hello(
                    worker_id=self.worker_id,
                    instance_uid=self.instance_uid,
                    backend="scripted",
                    status=self.status,
                )
            )
        )
        self._tasks.append(asyncio.create_task(self._read()))
        self._tasks.append(asyncio.create_task(self._report()))

    async def _messages(self):
        while True:
            message = await self._outbox.get()
            if message is None:
                return
            yield message

    def send(self, message: registry_pb2.WorkerMessage) -> None:
        self._outbox.put_nowait(message)

    def update_status(self, **changes) -> None:
        for key, value in changes.items():
            setattr(self.status, key, value)
        self.send(registry_pb2.WorkerMessage(status=self.status))

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            if self.send_status:
                self.send(registry_pb2.WorkerMessage(status=self.status))

    async def _read(self) -> None:
        try:
            async for message in self._call:
                kind = message.WhichOneof("kind")
                if kind == "welcome":
                    self.welcome = message.welcome
                elif kind == "task":
                    self._accept(message.task)
                elif kind == "task_batch":
                    self.task_batches.append(len(message.task_batch.tasks))
                    for task in message.task_batch.tasks:
                        self._accept(task)
                elif kind == "cancel":
                    self.cancels.append(message.cancel.task_id)
                elif kind == "drain":
                    self.drains.append(message.drain)
                elif kind == "fence":
                    self.fences.append(message.fence)
        except grpc.aio.AioRpcError as error:
            self.ended = error

    def _accept(self, task: registry_pb2.Task) -> None:
        self.tasks.append(task)
        running = asyncio.create_task(self._run(task))
        self._running.add(running)
        running.add_done_callback(self._running.discard)

    async def _run(self, task: registry_pb2.Task) -> None:
        result = await self.handler(task)
        if result is not None:
            self.send(registry_pb2.WorkerMessage(result=result))

    async def disconnect(self) -> None:
        """Drop the stream abruptly, as a crashed worker would."""
        if self._call is not None:
            self._call.cancel()
        await self.stop()

    async def stop(self) -> None:
        for task in [*self._tasks, *self._running]:
            task.cancel()
        for task in [*self._tasks, *self._running]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
