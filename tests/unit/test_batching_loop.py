"""The batch loop: grouping by key, capacity, deadlines, cancellation, failures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from mesh.clock import ManualClock, SystemClock
from mesh.errors import ErrorCode, MeshError
from mesh.v1 import common_pb2, inference_pb2
from worker_agent.backends.fake import FakeBackend, FakeBackendConfig, fake_embedding
from worker_agent.batch_loop import BatchLoop, PendingTask
from worker_agent.batching import BatchKey, BatchLimits

pytestmark = pytest.mark.timeout(20)

MODEL = "org/model"
KEY = BatchKey(MODEL, "default", "encode")


class Outcomes:
    """What the loop hands back, in order."""

    def __init__(self) -> None:
        self.by_task: dict[str, object] = {}
        self.order: list[str] = []
        self.timings: dict[str, tuple[float, float]] = {}
        self.changes = 0

    def sink(self, task: PendingTask, outcome: object, queue_s: float, inference_s: float) -> None:
        assert task.task_id not in self.by_task, "one outcome per task"
        self.by_task[task.task_id] = outcome
        self.order.append(task.task_id)
        self.timings[task.task_id] = (queue_s, inference_s)

    def changed(self) -> None:
        self.changes += 1

    def error_code(self, task_id: str) -> ErrorCode:
        outcome = self.by_task[task_id]
        assert isinstance(outcome, MeshError), outcome
        return outcome.code


def make_task(
    task_id: str, *, key: BatchKey = KEY, now_s: float | None = None, budget_s: float = 60.0, text: str = "hi"
) -> PendingTask:
    if now_s is None:
        now_s = SystemClock().monotonic()
    request = inference_pb2.EncodeRequest(items=[common_pb2.Item(id=task_id, text=text)])
    return PendingTask(
        task_id=task_id,
        key=key,
        request=request,
        items=1,
        tokens=3,
        enqueued_at_s=now_s,
        deadline_s=now_s + budget_s,
        reply_to=None,
    )


def make_loop(
    backend, outcomes: Outcomes, *, clock=None, capacity=16, max_requests=8, max_wait_s=0.0, max_batches=1
) -> BatchLoop:
    return BatchLoop(
        backend,
        clock=clock or SystemClock(),
        limits_for=lambda key: BatchLimits(max_requests, 10_000, max_wait_s),
        capacity=capacity,
        max_concurrent_batches=max_batches,
        expiry_sweep_s=0.01,
        on_outcome=outcomes.sink,
        on_change=outcomes.changed,
    )


@contextlib.asynccontextmanager
async def running(loop: BatchLoop) -> AsyncIterator[BatchLoop]:
    runner = asyncio.create_task(loop.run())
    try:
        yield loop
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_queued_tasks_of_one_key_run_as_one_batch_in_fifo_order():
    backend, outcomes = FakeBackend(), Outcomes()
    loop = make_loop(backend, outcomes)
    for index in range(5):
        assert loop.submit(make_task(f"t{index}", text=f"text {index}"))
    async with running(loop):
        await asyncio.wait_for(loop.wait_idle(), 5)
    assert backend.batch_sizes == [5]
    assert outcomes.order == [f"t{index}" for index in range(5)]
    for index in range(5):
        response = outcomes.by_task[f"t{index}"]
        assert isinstance(response, inference_pb2.EncodeResponse)
        assert response.items[0].dense.data == fake_embedding(MODEL, f"text {index}").tobytes()


async def test_keys_never_share_a_batch():
    backend, outcomes = FakeBackend(), Outcomes()
    loop = make_loop(backend, outcomes)
    other = BatchKey(MODEL, "default", "encode", lora="adapter-a")
    for index in range(3):
        loop.submit(make_task(f"base{index}"))
        loop.submit(make_task(f"lora{index}", key=other))
    async with running(loop):
        await asyncio.wait_for(loop.wait_idle(), 5)
    assert sorted(backend.batch_sizes) == [3, 3]
    lora_vector = outcomes.by_task["lora0"].items[0].dense.data
    assert lora_vector == fake_embedding(MODEL, "hi", lora="adapter-a").tobytes()
    assert lora_vector != outcomes.by_task["base0"].items[0].dense.data


async def test_batches_respect_max_requests():
    backend, outcomes = FakeBackend(), Outcomes()
    loop = make_loop(backend, outcomes, max_requests=3)
    for index in range(7):
        loop.submit(make_task(f"t{index}"))
    async with running(loop):
        await asyncio.wait_for(loop.wait_idle(), 5)
    assert backend.batch_sizes == [3, 3, 1]
    assert outcomes.order == [f"t{index}" for index in range(7)]


async def test_a_full_queue_refuses_and_counts_nothing():
    loop = make_loop(FakeBackend(), Outcomes(), capacity=2)
    assert loop.submit(make_task("a")) and loop.submit(make_task("b"))
    assert loop.full
    assert not loop.submit(make_task("c"))
    assert loop.queued == 2 and loop.depth_by_model[MODEL] == 2


async def test_expired_tasks_are_answered_and_never_run():
    clock = ManualClock(start_s=100.0)
    backend, outcomes = FakeBackend(), Outcomes()
    loop = make_loop(backend, outcomes, clock=clock)
    loop.submit(make_task("late", now_s=90.0, budget_s=5.0))
    loop.submit(make_task("fresh", now_s=99.0, budget_s=5.0))
    async with running(loop):
        await asyncio.wait_for(loop.wait_idle(), 5)
    assert outcomes.error_code("late") is ErrorCode.DEADLINE_EXCEEDED
    assert isinstance(outcomes.by_task["fresh"], inference_pb2.EncodeResponse)
    assert backend.batch_sizes == [1]
    assert outcomes.timings["late"][0] == pytest.approx(10.0)


async def test_tasks_expiring_while_the_backend_is_busy_are_answered_before_it_frees():
    backend = FakeBackend(FakeBackendConfig(fixed_latency_s=0.5))
    outcomes = Outcomes()
    loop = make_loop(backend, outcomes)
    now_s = SystemClock().monotonic()
    loop.submit(make_task("slow", now_s=now_s))
    async with running(loop):
        await asyncio.sleep(0)  # "slow" starts its batch
        loop.submit(make_task("short", now_s=now_s, budget_s=0.05))
        await asyncio.wait_for(loop.wait_idle(), 5)
    assert outcomes.order == ["short", "slow"]
    assert outcomes.error_code("short") is ErrorCode.DEADLINE_EXCEEDED
    assert backend.batch_sizes == [1]


async def test_cancelled_queued_task_leaves_at_once_and_never_runs():
    backend, outcomes = FakeBackend(), Outcomes()
    loop = make_loop(backend, outcomes)
    keep, withdrawn = make_task("keep"), make_task("withdrawn")
    loop.submit(keep)
    loop.submit(withdrawn)
    loop.cancel(withdrawn)
    assert loop.queued == 1 and loop.depth_by_model[MODEL] == 1
    async with running(loop):
        await asyncio.wait_for(loop.wait_idle(), 5)
    assert outcomes.order == ["keep"]
    assert backend.batch_sizes == [1]


async def test_cancelled_running_task_has_its_result_dropped():
    backend = FakeBackend(FakeBackendConfig(fixed_latency_s=0.05))
    outcomes = Outcomes()
    loop = make_loop(backend, outcomes)
    task = make_task("running")
    loop.submit(task)
    async with running(loop):
        while not task.running:
            await asyncio.sleep(0.001)
        loop.cancel(task)
        await asyncio.wait_for(loop.wait_idle(), 5)
    assert outcomes.order == []
    assert backend.batch_sizes == [1]
    assert loop.depth_by_model[MODEL] == 0


@pytest.mark.parametrize(
    ("config", "code"),
    [
        (FakeBackendConfig(fail_every_nth_batch=1), ErrorCode.WORKER_FAILED),
        (FakeBackendConfig(oom_above_items=2), ErrorCode.RESOURCE_EXHAUSTED),
    ],
)
async def test_a_failed_batch_answers_every_task_with_its_error(config, code):
    outcomes = Outcomes()
    loop = make_loop(FakeBackend(config), outcomes)
    for index in range(3):
        loop.submit(make_task(f"t{index}"))
    async with running(loop):
        await asyncio.wait_for(loop.wait_idle(), 5)
    assert [outcomes.error_code(f"t{index}") for index in range(3)] == [code] * 3


class MiscountingBackend(FakeBackend):
    async def encode(self, target, requests):
        return (await super().encode(target, requests))[:-1]


async def test_a_backend_answering_the_wrong_count_fails_the_batch_as_internal():
    outcomes = Outcomes()
    loop = make_loop(MiscountingBackend(), outcomes)
    loop.submit(make_task("a"))
    loop.submit(make_task("b"))
    async with running(loop):
        await asyncio.wait_for(loop.wait_idle(), 5)
    assert outcomes.error_code("a") is ErrorCode.INTERNAL and outcomes.error_code("b") is ErrorCode.INTERNAL


async def test_fail_queued_answers_everything_waiting():
    outcomes = Outcomes()
    loop = make_loop(FakeBackend(), outcomes)
    loop.submit(make_task("a"))
    loop.submit(make_task("b"))
    assert loop.fail_queued(MeshError(ErrorCode.NOT_READY, "drained")) == 2
    assert loop.queued == 0 and loop.in_flight == 0
    assert outcomes.error_code("a") is ErrorCode.NOT_READY
    await asyncio.wait_for(loop.wait_idle(), 1)


async def test_stopping_the_loop_cancels_running_batches():
    backend = FakeBackend(FakeBackendConfig(stall=True))
    outcomes = Outcomes()
    loop = make_loop(backend, outcomes)
    loop.submit(make_task("stuck"))
    runner = asyncio.create_task(loop.run())
    while not backend.batch_sizes:
        await asyncio.sleep(0.001)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert outcomes.order == []
