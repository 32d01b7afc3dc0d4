"""The real worker agent against a fake router on a real grpc.aio server (127.0.0.1, port 0)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.catalog import GLINER_MODEL_ID, MINILM_MODEL_ID, RERANKER_MODEL_ID, load_catalog
from mesh.errors import ErrorCode, code_from_proto
from mesh.v1 import registry_pb2
from worker_agent import (
    READINESS_SERVICE,
    AgentConfig,
    FakeBackend,
    FakeBackendConfig,
    LinkSettings,
    ReconnectPolicy,
    WorkerAgent,
    fake_embedding,
    fake_entities,
    fake_score,
)
from worker_agent.backends.dense_output import tensor_to_array
from worker_agent.testing import FakeRouter, encode_task, extract_task, new_task_id, score_task

pytestmark = pytest.mark.timeout(30)

FAST_LINK = LinkSettings(
    connect_timeout_s=2.0,
    write_timeout_s=2.0,
    close_timeout_s=0.5,
    reconnect=ReconnectPolicy(initial_s=0.02, multiplier=2.0, max_s=0.2),
)


def error_code(result: registry_pb2.TaskResult) -> ErrorCode:
    assert result.WhichOneof("outcome") == "error", result
    return code_from_proto(result.error.code)


def dense(result: registry_pb2.TaskResult, index: int = 0) -> np.ndarray:
    assert result.WhichOneof("outcome") == "encode", result
    return tensor_to_array(result.encode.items[index].dense)


@pytest.fixture
async def router() -> AsyncIterator[FakeRouter]:
    async with FakeRouter.serving() as fake:
        yield fake


@pytest.fixture
async def start_agent(router):
    """`await start_agent(backend=..., **config)`: a started agent on `router`, stopped at teardown."""
    agents: list[WorkerAgent] = []

    async def start(*, backend=None, routers=None, **overrides) -> WorkerAgent:
        settings = {
            "routers": routers or (router.address,),
            "worker_id": "worker-1",
            "bundle": "full",
            "preload": True,
            "max_batch_wait_s": 0.0,
            "link": FAST_LINK,
        }
        settings.update(overrides)
        agent = WorkerAgent(AgentConfig(**settings), backend or FakeBackend(), load_catalog())
        agents.append(agent)
        await agent.start()
        return agent

    yield start
    for agent in agents:
        await agent.stop()
        # Structured concurrency: nothing the agent started outlives it.
        assert not agent._tasks, agent._tasks


async def ready(router: FakeRouter) -> registry_pb2.WorkerStatus:
    return await router.wait_status(lambda status: status.ready)


# -- registration and status -------------------------------------------------------------


async def test_hello_describes_the_worker_fully(router, start_agent):
    agent = await start_agent(preload=False, machine_profile="L4", pool="tenant-a", gpu_count=2)
    hello = await router.wait_hello()
    assert hello.worker_id == "worker-1"
    assert hello.instance_uid == agent.instance_uid and len(hello.instance_uid) == 32
    assert hello.backend == "fake" and hello.agent_version
    status = hello.status
    assert (status.bundle, status.machine_profile, status.pool, status.gpu_count) == (
        "full",
        "L4",
        "tenant-a",
        2,
    )
    assert status.ready and not status.draining
    assert status.bundle_config_hash == load_catalog().bundle_config_hash("full") != ""
    assert status.max_batch_requests == 32 and status.queue_capacity == 256
    assert {model.name: model.state for model in status.models} == {
        GLINER_MODEL_ID: registry_pb2.MODEL_STATE_AVAILABLE,
        MINILM_MODEL_ID: registry_pb2.MODEL_STATE_AVAILABLE,
        RERANKER_MODEL_ID: registry_pb2.MODEL_STATE_AVAILABLE,
    }


async def test_status_follows_the_welcome_interval(router, start_agent):
    await start_agent()
    await ready(router)
    await router.wait_for(lambda: len(router.statuses) >= 8, timeout_s=5)
    arrivals = [at for at, _ in router.statuses[-6:]]
    gaps = np.diff(arrivals)
    # Idle worker: one report per 50 ms interval, give or take scheduling.
    assert 0.5 * 0.050 <= float(np.median(gaps)) <= 3 * 0.050, gaps
    sequence = [status.seq for _, status in router.statuses]
    assert sequence == sorted(sequence) and len(set(sequence)) == len(sequence)


async def test_status_goes_out_at_once_on_a_change(start_agent):
    async with FakeRouter.serving(status_interval_ms=60_000) as slow_router:
        backend = FakeBackend(FakeBackendConfig(load_delay_s=0.2))
        await start_agent(routers=(slow_router.address,), preload=False, backend=backend)
        await slow_router.wait_hello()
        # A task for an unloaded model starts its load: loading, then loaded, long before 60 s.
        result = await slow_router.run_task(encode_task(MINILM_MODEL_ID, ["x"]))
        assert error_code(result) is ErrorCode.MODEL_LOADING
        assert result.error.retryable and result.error.retry_after_s > 0

        def state(status):
            return {model.name: model.state for model in status.models}[MINILM_MODEL_ID]

        await slow_router.wait_status(lambda s: state(s) == registry_pb2.MODEL_STATE_LOADING, timeout_s=2)
        await slow_router.wait_status(lambda s: state(s) == registry_pb2.MODEL_STATE_LOADED, timeout_s=2)
        result = await slow_router.run_task(encode_task(MINILM_MODEL_ID, ["x"]))
        assert np.array_equal(dense(result), fake_embedding(MINILM_MODEL_ID, "x"))


async def test_preload_reports_ready_only_once_models_are_loaded(router, start_agent):
    agent = await start_agent(backend=FakeBackend(FakeBackendConfig(load_delay_s=0.2)))
    hello = await router.wait_hello()
    assert not hello.status.ready
    status = await ready(router)
    assert all(model.state == registry_pb2.MODEL_STATE_LOADED for model in status.models)
    assert agent.ready


async def test_a_permanent_load_failure_is_reported_and_answered(router, start_agent):
    backend = FakeBackend(FakeBackendConfig(fail_load=frozenset({GLINER_MODEL_ID})))
    await start_agent(backend=backend)
    status = await ready(router)
    failed = {model.name: model for model in status.models}[GLINER_MODEL_ID]
    assert failed.state == registry_pb2.MODEL_STATE_FAILED and "fail loading" in failed.error
    result = await router.run_task(extract_task(GLINER_MODEL_ID, ["Ada"]))
    assert error_code(result) is ErrorCode.MODEL_LOAD_FAILED and not result.error.retryable


# -- tasks ---------------------------------------------------------------------------------


async def test_encode_score_and_extract_answer_exact_fake_values(router, start_agent):
    await start_agent()
    await ready(router)
    result = await router.run_task(encode_task(MINILM_MODEL_ID, ["hello", "world"], lora="adapter-1"))
    assert [item.id for item in result.encode.items] == ["item-0", "item-1"]
    assert np.array_equal(dense(result, 0), fake_embedding(MINILM_MODEL_ID, "hello", lora="adapter-1"))
    assert np.array_equal(dense(result, 1), fake_embedding(MINILM_MODEL_ID, "world", lora="adapter-1"))
    assert result.encode.model == MINILM_MODEL_ID and result.encode.worker_id == "worker-1"
    assert result.queue_ms >= 0 and result.inference_ms >= 0
    assert result.encode.timing.total_ms == pytest.approx(result.queue_ms + result.inference_ms)

    result = await router.run_task(score_task(RERANKER_MODEL_ID, "query", ["doc a", "doc b", "doc c"]))
    scores = {score.item_id: score.score for score in result.score.scores}
    assert scores == {
        f"doc-{index}": fake_score(RERANKER_MODEL_ID, "query", text)
        for index, text in enumerate(["doc a", "doc b", "doc c"])
    }
    assert [score.rank for score in result.score.scores] == [0, 1, 2]

    result = await router.run_task(extract_task(GLINER_MODEL_ID, ["Grace Hopper met Alan"], ["person"]))
    entities = [
        (entity.text, entity.label, entity.start, entity.end) for entity in result.extract.items[0].entities
    ]
    assert entities == [
        (entity.text, entity.label, entity.start, entity.end)
        for entity in fake_entities(GLINER_MODEL_ID, "Grace Hopper met Alan", ["person"])
    ]


async def test_invalid_tasks_are_answered_with_their_error(router, start_agent):
    await start_agent(bundle="default")
    await ready(router)
    unknown = await router.run_task(encode_task("acme/not-here", ["x"]))
    assert error_code(unknown) is ErrorCode.MODEL_NOT_FOUND
    # The reranker exists, but not in the `default` bundle.
    other_bundle = await router.run_task(score_task(RERANKER_MODEL_ID, "q", ["d"]))
    assert error_code(other_bundle) is ErrorCode.MODEL_NOT_FOUND
    no_operation = await router.run_task(registry_pb2.Task(task_id=new_task_id(), model_id=MINILM_MODEL_ID))
    assert error_code(no_operation) is ErrorCode.INVALID_INPUT
    empty = await router.run_task(encode_task(MINILM_MODEL_ID, []))
    assert error_code(empty) is ErrorCode.INVALID_INPUT
    bad_profile = await router.run_task(encode_task(MINILM_MODEL_ID, ["x"], profile="nope"))
    assert error_code(bad_profile) is ErrorCode.INVALID_INPUT and bad_profile.error.field == "profile"
    # Case-insensitive model ids, as the router matches them.
    fine = await router.run_task(encode_task(MINILM_MODEL_ID.upper(), ["x"]))
    assert np.array_equal(dense(fine), fake_embedding(MINILM_MODEL_ID, "x"))


async def test_concurrent_tasks_are_batched_together(router, start_agent):
    backend = FakeBackend()
    await start_agent(backend=backend, max_batch_requests=8, max_batch_wait_s=5.0)
    await ready(router)
    tasks = [encode_task(MINILM_MODEL_ID, [f"text {index}"]) for index in range(8)]
    for task in tasks:
        router.send_task(task)
    await router.wait_for(lambda: all(task.task_id in router.results for task in tasks))
    # Full at 8: ran at once as one batch, long before the 5 s max wait.
    assert backend.batch_sizes == [8]
    for index, task in enumerate(tasks):
        assert np.array_equal(
            dense(router.results[task.task_id]), fake_embedding(MINILM_MODEL_ID, f"text {index}")
        )


async def test_a_task_batch_runs_as_one_batch_and_is_answered_in_one_message(router, start_agent):
    backend = FakeBackend()
    await start_agent(backend=backend, max_batch_requests=8)
    await ready(router)
    tasks = [encode_task(MINILM_MODEL_ID, [f"text {index}"]) for index in range(6)]
    router.send_task_batch(tasks)
    await router.wait_for(lambda: all(task.task_id in router.results for task in tasks))
    assert backend.batch_sizes == [6]
    assert router.result_messages == [6]  # one ResultBatch for the whole batch
    for index, task in enumerate(tasks):
        result = router.results[task.task_id]
        assert result.encode.worker_id == "worker-1" and result.inference_ms >= 0
        assert np.array_equal(dense(result), fake_embedding(MINILM_MODEL_ID, f"text {index}"))

    # Tasks of a batch that cannot run are answered with their own errors, the rest as usual.
    good, unknown = encode_task(MINILM_MODEL_ID, ["fine"]), encode_task("org/no-such-model", ["x"])
    router.send_task_batch([good, unknown])
    await router.wait_for(lambda: good.task_id in router.results and unknown.task_id in router.results)
    assert np.array_equal(dense(router.results[good.task_id]), fake_embedding(MINILM_MODEL_ID, "fine"))
    assert error_code(router.results[unknown.task_id]) is ErrorCode.MODEL_NOT_FOUND


class _OneBadAnswer(FakeBackend):
    """Answers the text "broken" with something that is not an EncodeResponse (a backend bug)."""

    async def encode(self, target, requests):
        outcomes = await super().encode(target, requests)
        return [
            "not a response" if request.items[0].text == "broken" else outcome
            for request, outcome in zip(requests, outcomes, strict=True)
        ]


async def test_a_backend_answer_of_the_wrong_kind_fails_only_its_task(router, start_agent):
    await start_agent(backend=_OneBadAnswer(), max_batch_requests=8)
    await ready(router)
    tasks = [encode_task(MINILM_MODEL_ID, [text]) for text in ("before", "broken", "after")]
    router.send_task_batch(tasks)
    await router.wait_for(lambda: all(task.task_id in router.results for task in tasks))
    assert error_code(router.results[tasks[1].task_id]) is ErrorCode.INTERNAL
    for task, text in ((tasks[0], "before"), (tasks[2], "after")):
        assert np.array_equal(dense(router.results[task.task_id]), fake_embedding(MINILM_MODEL_ID, text))
    # The stream survived: the next task is answered on it.
    later = await router.run_task(encode_task(MINILM_MODEL_ID, ["later"]))
    assert np.array_equal(dense(later), fake_embedding(MINILM_MODEL_ID, "later"))
    assert len(router.hellos) == 1


async def test_tasks_arriving_while_a_batch_runs_share_the_next_batch(router, start_agent):
    backend = FakeBackend(FakeBackendConfig(fixed_latency_s=0.2))
    await start_agent(backend=backend)
    await ready(router)
    first = encode_task(MINILM_MODEL_ID, ["first"])
    router.send_task(first)
    await router.wait_status(lambda status: status.models and sum(m.queue_depth for m in status.models) == 1)
    rest = [encode_task(MINILM_MODEL_ID, [f"more {index}"]) for index in range(5)]
    for task in rest:
        router.send_task(task)
    await router.wait_for(lambda: all(task.task_id in router.results for task in [first, *rest]))
    assert backend.batch_sizes == [1, 5]


async def test_cancel_withdraws_queued_work_and_drops_running_results(router, start_agent):
    backend = FakeBackend(FakeBackendConfig(fixed_latency_s=0.2))
    await start_agent(backend=backend, max_batch_requests=1)
    await ready(router)
    running, queued, after = (encode_task(MINILM_MODEL_ID, [name]) for name in ("running", "queued", "after"))
    router.send_task(running)
    router.send_task(queued)
    await router.wait_for(lambda: backend.batch_sizes == [1])
    router.cancel(running.task_id)
    router.cancel(queued.task_id)
    router.send_task(after)
    await router.wait_result(after.task_id)
    # Batches run one at a time, so the cancelled running batch finished before "after" ran.
    assert running.task_id not in router.results and queued.task_id not in router.results
    assert backend.batch_sizes == [1, 1]


async def test_expired_work_is_answered_and_never_run(router, start_agent):
    backend = FakeBackend(FakeBackendConfig(fixed_latency_s=0.3))
    await start_agent(backend=backend)
    await ready(router)
    slow = encode_task(MINILM_MODEL_ID, ["slow"])
    router.send_task(slow)
    await router.wait_for(lambda: backend.batch_sizes == [1])
    short = encode_task(MINILM_MODEL_ID, ["short"], budget_ms=30)
    router.send_task(short)
    result = await router.wait_result(short.task_id)
    assert error_code(result) is ErrorCode.DEADLINE_EXCEEDED
    # Answered while the backend was still busy, not when it freed up.
    assert router.result_order[-1] == short.task_id and slow.task_id not in router.results
    await router.wait_result(slow.task_id)
    assert backend.batch_sizes == [1]


async def test_a_full_queue_answers_queue_full_and_reports_saturation(router, start_agent):
    backend = FakeBackend(FakeBackendConfig(stall=True))
    await start_agent(backend=backend, queue_capacity=2, max_batch_requests=1)
    await ready(router)
    stuck = encode_task(MINILM_MODEL_ID, ["stuck"])
    router.send_task(stuck)
    await router.wait_for(lambda: backend.batch_sizes == [1])
    for name in ("q1", "q2"):
        router.send_task(encode_task(MINILM_MODEL_ID, [name]))
    overflow = await router.run_task(encode_task(MINILM_MODEL_ID, ["overflow"]))
    assert error_code(overflow) is ErrorCode.QUEUE_FULL
    assert overflow.error.retryable and overflow.error.retry_after_s == 1.0
    status = await router.wait_status(lambda status: status.saturated)
    depth = {model.name: model.queue_depth for model in status.models}
    assert depth[MINILM_MODEL_ID] == 3  # one running, two queued


async def test_results_go_back_on_the_stream_the_task_came_from(start_agent):
    async with FakeRouter.serving(router_id="a") as router_a, FakeRouter.serving(router_id="b") as router_b:
        agent = await start_agent(routers=(router_a.address, router_b.address))
        await router_a.wait_status(lambda status: status.ready)
        await router_b.wait_status(lambda status: status.ready)
        assert agent.connected_routers == 2
        task = encode_task(MINILM_MODEL_ID, ["via b"])
        result = await router_b.run_task(task)
        assert np.array_equal(dense(result), fake_embedding(MINILM_MODEL_ID, "via b"))
        assert task.task_id not in router_a.results


# -- config, drain, fence, reconnect ----------------------------------------------------------

NEW_MODEL_YAML = """
sie_id: acme/tiny-embed
profiles:
  default:
    adapter_path: sie_server.adapters.sentence_transformer:SentenceTransformerDenseAdapter
    max_batch_tokens: 4096
"""


async def test_config_update_is_applied_and_acked_with_the_new_hash(router, start_agent):
    agent = await start_agent()
    await ready(router)
    old_hash = agent.bundle_config_hash
    expected_catalog, _ = load_catalog().with_model_document(NEW_MODEL_YAML, source="api")
    expected_hash = expected_catalog.bundle_config_hash("full")
    assert expected_hash != old_hash
    router.send(
        registry_pb2.RouterMessage(
            config_update=registry_pb2.ConfigUpdate(
                epoch=7,
                models=[registry_pb2.ModelConfigDocument(model_id="acme/tiny-embed", yaml=NEW_MODEL_YAML)],
                expected_bundle_config_hash=expected_hash,
            )
        )
    )
    await router.wait_for(lambda: bool(router.acks))
    assert (router.acks[0].epoch, router.acks[0].bundle_config_hash) == (7, expected_hash)
    status = await router.wait_status(lambda status: status.bundle_config_hash == expected_hash)
    assert "acme/tiny-embed" in {model.name for model in status.models}
    # The new model is servable (lazily loaded).
    first = await router.run_task(encode_task("acme/tiny-embed", ["x"]))
    assert error_code(first) is ErrorCode.MODEL_LOADING


async def test_drain_finishes_in_flight_work_then_takes_nothing(router, start_agent):
    backend = FakeBackend(FakeBackendConfig(fixed_latency_s=0.1))
    agent = await start_agent(backend=backend, max_batch_requests=1)
    await ready(router)
    in_flight = [encode_task(MINILM_MODEL_ID, [f"work {index}"]) for index in range(3)]
    for task in in_flight:
        router.send_task(task)
    await router.wait_for(lambda: len(backend.batch_sizes) == 1)
    router.send(registry_pb2.RouterMessage(drain=registry_pb2.Drain(reason="scale down", grace_ms=5000)))
    await router.wait_for(lambda: bool(router.drain_notices))
    assert router.drain_notices[0].reason == "scale down"
    await router.wait_status(lambda status: status.draining and not status.ready)
    refused = await router.run_task(encode_task(MINILM_MODEL_ID, ["too late"]))
    assert error_code(refused) is ErrorCode.NOT_READY and refused.error.retryable
    await router.wait_for(lambda: all(task.task_id in router.results for task in in_flight))
    for index, task in enumerate(in_flight):
        assert np.array_equal(
            dense(router.results[task.task_id]), fake_embedding(MINILM_MODEL_ID, f"work {index}")
        )
    assert agent.draining and not agent.ready


async def test_drain_past_its_grace_sends_queued_work_back(router, start_agent):
    backend = FakeBackend(FakeBackendConfig(stall=True))
    agent = await start_agent(backend=backend, max_batch_requests=1)
    await ready(router)
    stuck, waiting = encode_task(MINILM_MODEL_ID, ["stuck"]), encode_task(MINILM_MODEL_ID, ["waiting"])
    router.send_task(stuck)
    router.send_task(waiting)
    await router.wait_for(lambda: backend.batch_sizes == [1])
    await agent.drain(grace_s=0.1)
    result = await router.wait_result(waiting.task_id)
    assert error_code(result) is ErrorCode.NOT_READY


async def test_fence_makes_the_worker_register_again_as_a_new_instance(router, start_agent):
    agent = await start_agent()
    first = await router.wait_hello()
    router.send(registry_pb2.RouterMessage(fence=registry_pb2.Fence(reason="stale incarnation")))
    second = await router.wait_hello(count=2)
    assert second.worker_id == first.worker_id
    assert second.instance_uid != first.instance_uid
    assert second.instance_uid == agent.instance_uid
    assert router.streams[0].closed


async def test_the_agent_reconnects_after_the_router_restarts(start_agent):
    async with FakeRouter.serving() as first_router:
        address = first_router.address
        agent = await start_agent(routers=(address,))
        hello = await first_router.wait_hello()
    # The router is gone; the agent keeps trying. Bring a new one up on the same port.
    port = int(address.rpartition(":")[2])
    async with FakeRouter.serving(port=port) as second_router:
        again = await second_router.wait_hello(timeout_s=10)
        assert again.instance_uid == hello.instance_uid  # not fenced: the same incarnation
        task = encode_task(MINILM_MODEL_ID, ["after restart"])
        result = await second_router.run_task(task)
        assert np.array_equal(dense(result), fake_embedding(MINILM_MODEL_ID, "after restart"))
        assert agent.connected_routers == 1


async def test_a_dead_router_does_not_hold_up_the_live_one(router, start_agent, free_port):
    agent = await start_agent(routers=(f"127.0.0.1:{free_port}", router.address))
    await ready(router)
    result = await router.run_task(encode_task(MINILM_MODEL_ID, ["alive"]))
    assert np.array_equal(dense(result), fake_embedding(MINILM_MODEL_ID, "alive"))
    assert agent.connected_routers == 1


# -- health and lifecycle -------------------------------------------------------------------


async def check(port: int, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return response.status


async def test_health_reports_liveness_and_readiness_until_drain(router, start_agent, assert_eventually):
    agent = await start_agent(health_port=0, health_host="127.0.0.1")
    port = agent.health_port
    assert port
    assert await check(port, "") == health_pb2.HealthCheckResponse.SERVING

    async def readiness_is(expected):
        assert await check(port, READINESS_SERVICE) == expected

    await assert_eventually(lambda: readiness_is(health_pb2.HealthCheckResponse.SERVING))
    await agent.drain(grace_s=1.0)
    assert await check(port, READINESS_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await check(port, "") == health_pb2.HealthCheckResponse.SERVING


async def test_stop_closes_the_stream_and_the_router_sees_it(router, start_agent):
    agent = await start_agent()
    await ready(router)
    await agent.stop()
    await router.wait_for(lambda: router.stream.closed, timeout_s=2)
    assert agent.connected_routers == 0
    with contextlib.suppress(Exception):
        await agent.stop()  # idempotent
