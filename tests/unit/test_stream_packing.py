"""Both ends of the registry stream pack what queued together into few messages,
in order, each record built in place in the message it leaves in."""

from __future__ import annotations

from collections import deque

from mesh.registry import OutboundTask
from mesh.services.worker_registry import coalesce_tasks
from mesh.stream_packing import pack_runs
from mesh.v1 import common_pb2, inference_pb2, registry_pb2
from worker_agent.router_link import TaskOutcome, coalesce_results


def task(index: int) -> OutboundTask:
    request = inference_pb2.EncodeRequest(model="org/model", items=[common_pb2.Item(text=f"text {index}")])
    return OutboundTask(f"t{index}", "org/model", "default", 1000 + index, "encode", request)


def test_runs_of_tasks_leave_in_one_message_and_other_messages_keep_their_place() -> None:
    cancel = registry_pb2.RouterMessage(cancel=registry_pb2.Cancel(task_id="t0"))
    messages = coalesce_tasks([task(1), task(2), task(3), cancel, task(4), None])
    assert [m.WhichOneof("kind") if m is not None else None for m in messages] == [
        "task_batch",
        "cancel",
        "task",
        None,
    ]
    batch = messages[0].task_batch.tasks
    assert [t.task_id for t in batch] == ["t1", "t2", "t3"]
    assert [t.budget_ms for t in batch] == [1001, 1002, 1003]
    assert batch[2].encode.items[0].text == "text 3" and batch[2].model_id == "org/model"
    assert messages[2].task.task_id == "t4" and messages[2].task.profile == "default"


def test_outcomes_and_errors_share_a_result_batch() -> None:
    response = inference_pb2.EncodeResponse(model="org/model")
    error = common_pb2.ErrorDetail(message="no such model")
    drain = registry_pb2.WorkerMessage(drain_notice=registry_pb2.DrainNotice(reason="bye"))
    outbox: deque = deque(
        [
            TaskOutcome("a", "encode", response, 0.5, 1.5),
            TaskOutcome("b", "", error),
            drain,
            TaskOutcome("c", "", error),
        ]
    )
    messages = coalesce_results(outbox, 3)
    assert len(outbox) == 1  # only the entries asked for are taken
    assert [m.WhichOneof("kind") for m in messages] == ["result_batch", "drain_notice"]
    first, second = messages[0].result_batch.results
    assert (first.task_id, first.WhichOneof("outcome"), first.queue_ms, first.inference_ms) == (
        "a",
        "encode",
        0.5,
        1.5,
    )
    assert (second.task_id, second.WhichOneof("outcome"), second.error.message) == (
        "b",
        "error",
        "no such model",
    )
    (last,) = coalesce_results(outbox, 1)
    assert last.WhichOneof("kind") == "result" and last.result.task_id == "c"


def test_a_run_longer_than_the_limit_is_split() -> None:
    messages = pack_runs(
        [task(index) for index in range(5)],
        OutboundTask,
        registry_pb2.RouterMessage,
        single="task",
        batch="task_batch",
        items="tasks",
        limit=2,
    )
    assert [m.WhichOneof("kind") for m in messages] == ["task_batch", "task_batch", "task"]
    assert [t.task_id for m in messages[:2] for t in m.task_batch.tasks] == ["t0", "t1", "t2", "t3"]
    assert messages[2].task.task_id == "t4"
