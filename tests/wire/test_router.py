"""Router wire tests: a real router on 127.0.0.1:0, scripted workers on real streams."""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest

from mesh.errors import ErrorCode, from_rpc_error
from mesh.router import Router, RouterConfig
from mesh.services import RegistrySettings
from mesh.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
)
from tests.wire.scripted_worker import ScriptedWorker, answer_encode, dense_for, status

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
async def router():
    router = Router(
        RouterConfig(
            host="127.0.0.1",
            port=0,
            router_id="r1",
            registry=RegistrySettings(silence_timeout_s=1.0, hello_timeout_s=2.0),
            sweep_interval_s=0.1,
        )
    )
    await router.start()
    yield router
    await router.stop(grace_s=0.2)


@pytest.fixture
async def channel(router):
    async with grpc.aio.insecure_channel(router.address) as channel:
        yield channel


@pytest.fixture
def inference(channel):
    return inference_pb2_grpc.InferenceStub(channel)


@pytest.fixture
async def workers(router):
    started: list[ScriptedWorker] = []

    async def start(worker_id, worker_status=None, handler=None) -> ScriptedWorker:
        worker = ScriptedWorker(
            router.address, worker_id, worker_status or status(), handler or answer_encode(worker_id)
        )
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.stop()


def encode_request(text="hello", model=MODEL, **target) -> inference_pb2.EncodeRequest:
    return inference_pb2.EncodeRequest(
        model=model,
        items=[common_pb2.Item(id="a", text=text)],
        target=common_pb2.RoutingTarget(**target),
    )


def registered(router, *worker_ids):
    def probe():
        live = {v.worker_id for v in router.registry.snapshot() if v.healthy}
        assert set(worker_ids) <= live, live

    return probe


async def test_registration_and_status_propagation(router, workers, assert_eventually):
    worker = await workers("w1", status(machine_profile="L4"))
    await assert_eventually(registered(router, "w1"))
    await assert_eventually(lambda: worker.welcome is not None and worker.welcome.router_id == "r1")
    (view,) = router.registry.snapshot()
    assert view.machine_profile == "l4"
    assert view.bundle == "default"
    worker.update_status(bundle="other", ready=False)

    def changed():
        (view,) = router.registry.snapshot()
        assert view.bundle == "other" and not view.ready

    await assert_eventually(changed)


async def test_dispatch_returns_the_workers_answer(router, workers, inference, assert_eventually):
    worker = await workers("w1")
    await assert_eventually(registered(router, "w1"))
    response = await inference.Encode(encode_request("hi"), timeout=5)
    assert response.worker_id == "w1"
    assert [item.id for item in response.items] == ["a"]
    assert response.items[0].dense.shape == [4]
    assert response.timing.total_ms > 0
    assert response.timing.inference_ms == 1.0
    (task,) = worker.tasks
    assert task.model_id == MODEL
    assert 0 < task.budget_ms <= 6000  # the caller's 5 s deadline, give or take wire rounding


async def test_concurrent_tasks_share_stream_writes_both_ways(router, workers, inference, assert_eventually):
    held: list[registry_pb2.Task] = []

    async def hold(task: registry_pb2.Task) -> None:
        held.append(task)  # answered below, all in one ResultBatch

    worker = await workers("w1", handler=hold)
    await assert_eventually(registered(router, "w1"))
    texts = [f"text-{index}" for index in range(12)]
    calls = [asyncio.ensure_future(inference.Encode(encode_request(text), timeout=10)) for text in texts]
    await assert_eventually(lambda: len(held) == len(texts))
    # Tasks that queued while the stream was busy left packed in TaskBatches.
    assert worker.task_batches and max(worker.task_batches) >= 2

    answer = answer_encode("w1")
    reply = registry_pb2.WorkerMessage()
    for task in reversed(held):  # any order: results name their tasks
        reply.result_batch.results.append(await answer(task))
    worker.send(reply)
    responses = await asyncio.gather(*calls)
    for text, response in zip(texts, responses, strict=True):
        assert response.worker_id == "w1"
        assert response.items[0].dense == dense_for(f"w1:{text}")


async def test_retry_on_another_worker_when_the_first_dies_mid_request(
    router, workers, inference, assert_eventually
):
    doomed: list[ScriptedWorker] = []

    async def die(task):
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(doomed[0].disconnect()))
        await asyncio.sleep(3600)

    doomed.append(await workers("dies", handler=die))
    await assert_eventually(registered(router, "dies"))
    # The survivor reports a deeper queue so the doomed worker is the primary.
    survivor = await workers("survives", status(models={MODEL: registry_pb2.MODEL_STATE_LOADED}))
    await assert_eventually(registered(router, "dies", "survives"))
    survivor.status.models[0].queue_depth = 5
    survivor.update_status()
    await assert_eventually(
        lambda: next(v for v in router.registry.snapshot() if v.worker_id == "survives").queue_depth == 5
    )
    response = await inference.Encode(encode_request(), timeout=10)
    assert response.worker_id == "survives"
    assert len(doomed[0].tasks) == 1 and len(survivor.tasks) == 1


async def test_caller_cancel_cancels_the_task_on_the_worker(router, workers, inference, assert_eventually):
    async def never(task):
        return None

    worker = await workers("slow", handler=never)
    await assert_eventually(registered(router, "slow"))
    call = inference.Encode(encode_request(), timeout=30)
    await assert_eventually(lambda: len(worker.tasks) == 1)
    call.cancel()
    await assert_eventually(lambda: worker.cancels == [worker.tasks[0].task_id])
    await assert_eventually(lambda: router.service.in_flight == 0)


async def test_deadline_exceeded_and_the_worker_is_told(router, workers, inference, assert_eventually):
    async def never(task):
        return None

    worker = await workers("slow", handler=never)
    await assert_eventually(registered(router, "slow"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inference.Encode(encode_request(), timeout=0.5)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await assert_eventually(lambda: worker.cancels == [worker.tasks[0].task_id])


async def test_worker_error_codes_reach_the_caller(router, workers, inference, assert_eventually):
    async def fail(task):
        error = common_pb2.ErrorDetail(
            code=common_pb2.ERROR_CODE_MODEL_LOAD_FAILED, message="weights missing", retryable=False
        )
        return registry_pb2.TaskResult(task_id=task.task_id, error=error)

    await workers("broken", handler=fail)
    await assert_eventually(registered(router, "broken"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inference.Encode(encode_request(), timeout=5)
    error = from_rpc_error(caught.value)
    assert error.code is ErrorCode.MODEL_LOAD_FAILED
    assert error.message == "weights missing"


async def test_queue_full_everywhere_surfaces_queue_full(router, workers, inference, assert_eventually):
    async def full(task):
        error = common_pb2.ErrorDetail(code=common_pb2.ERROR_CODE_QUEUE_FULL, message="full", retry_after_s=1)
        return registry_pb2.TaskResult(task_id=task.task_id, error=error)

    first = await workers("full-1", handler=full)
    second = await workers("full-2", handler=full)
    await assert_eventually(registered(router, "full-1", "full-2"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inference.Encode(encode_request(), timeout=5)
    assert from_rpc_error(caught.value).code is ErrorCode.QUEUE_FULL
    assert len(first.tasks) == 1 and len(second.tasks) == 1


async def test_no_worker_is_provisioning_and_demand_is_recorded(router, channel, inference):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inference.Encode(encode_request(machine_profile="H100"), timeout=5)
    error = from_rpc_error(caught.value)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert error.code is ErrorCode.PROVISIONING
    assert error.effective_retry_after_s > 0
    assert error.machine_profile == "h100"
    demand = await cluster_pb2_grpc.ClusterStub(channel).GetPendingDemand(
        cluster_pb2.GetPendingDemandRequest()
    )
    assert [(d.machine_profile, d.bundle, d.requests) for d in demand.demand] == [("h100", "default", 1)]


async def test_pinned_pool_without_workers_is_not_provisioning(router, workers, inference, assert_eventually):
    await workers("shared")
    await assert_eventually(registered(router, "shared"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inference.Encode(encode_request(pool="tenant-a"), timeout=5)
    assert from_rpc_error(caught.value).code is ErrorCode.POOL_UNAVAILABLE


async def test_unknown_model_and_bad_input(router, inference):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inference.Encode(encode_request(model="nobody/knows-this"), timeout=5)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert from_rpc_error(caught.value).code is ErrorCode.MODEL_NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inference.Encode(inference_pb2.EncodeRequest(model=MODEL), timeout=5)
    error = from_rpc_error(caught.value)
    assert error.code is ErrorCode.INVALID_INPUT and error.field == "items"


async def test_drain_worker_stops_routing_to_it(router, workers, channel, inference, assert_eventually):
    draining = await workers("draining")
    await workers("stays")
    await assert_eventually(registered(router, "draining", "stays"))
    cluster = cluster_pb2_grpc.ClusterStub(channel)
    reply = await cluster.DrainWorker(cluster_pb2.DrainWorkerRequest(worker_id="draining", grace_ms=1000))
    assert reply.found
    await assert_eventually(lambda: len(draining.drains) == 1)
    for _ in range(10):
        response = await inference.Encode(encode_request(), timeout=5)
        assert response.worker_id == "stays"
    missing = await cluster.DrainWorker(cluster_pb2.DrainWorkerRequest(worker_id="nobody"))
    assert not missing.found


async def test_silent_worker_is_ejected_and_fenced(router, workers, assert_eventually):
    worker = await workers("quiet")
    await assert_eventually(registered(router, "quiet"))
    worker.send_status = False
    await assert_eventually(lambda: not router.registry.snapshot(), timeout_s=5)
    await assert_eventually(lambda: len(worker.fences) == 1, timeout_s=5)


async def test_closed_stream_leaves_routing_at_once(router, workers, assert_eventually):
    worker = await workers("gone")
    await assert_eventually(registered(router, "gone"))
    await worker.disconnect()
    await assert_eventually(lambda: not router.registry.snapshot(), timeout_s=2)


async def test_cluster_health_lists_workers_and_models(router, workers, channel, assert_eventually):
    await workers("w1", status(machine_profile="l4"))
    await assert_eventually(registered(router, "w1"))
    cluster = cluster_pb2_grpc.ClusterStub(channel)
    health = (await cluster.GetHealth(cluster_pb2.GetHealthRequest())).health
    assert health.status == "healthy"
    assert [w.worker_id for w in health.workers] == ["w1"]
    assert health.live_gpu_types == ["l4"]
    assert MODEL in health.models_loaded
    model = (await cluster.GetModel(cluster_pb2.GetModelRequest(model=MODEL.upper()))).model
    assert model.name == MODEL and model.state == "loaded" and model.workers == ["w1"]


# -- bad input on the registry stream ---------------------------------------


async def _raw_connect(channel, frames: list[bytes]):
    """Send raw bytes as WorkerMessages; returns the RPC's final error."""
    connect = channel.stream_stream(
        "/mesh.v1.WorkerRegistry/Connect",
        request_serializer=lambda raw: raw,
        response_deserializer=registry_pb2.RouterMessage.FromString,
    )

    async def frames_iter():
        for frame in frames:
            yield frame
        await asyncio.sleep(10)

    call = connect(frames_iter(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    return caught.value


def hello_bytes(worker_id="bad", instance_uid="i-1", worker_status=None) -> bytes:
    return registry_pb2.WorkerMessage(
        hello=registry_pb2.Hello(
            worker_id=worker_id, instance_uid=instance_uid, status=worker_status or status()
        )
    ).SerializeToString()


def nan_status() -> registry_pb2.WorkerStatus:
    bad = status()
    bad.gpus.add(device="cuda:0", utilization_pct=math.nan)
    return bad


def negative_status() -> registry_pb2.WorkerStatus:
    bad = status()
    bad.gpus.add(device="cuda:0", utilization_pct=-3.0)
    return bad


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        pytest.param([b"\xff\xfe\xfd garbage"], None, id="garbage-bytes"),
        pytest.param(
            [registry_pb2.WorkerMessage(status=status()).SerializeToString()],
            grpc.StatusCode.INVALID_ARGUMENT,
            id="first-not-hello",
        ),
        pytest.param([hello_bytes(worker_id="")], grpc.StatusCode.INVALID_ARGUMENT, id="empty-worker-id"),
        pytest.param([hello_bytes(instance_uid="")], grpc.StatusCode.INVALID_ARGUMENT, id="empty-instance"),
        pytest.param([hello_bytes(worker_status=nan_status())], grpc.StatusCode.INVALID_ARGUMENT, id="nan"),
        pytest.param(
            [hello_bytes(worker_status=negative_status())], grpc.StatusCode.INVALID_ARGUMENT, id="negative"
        ),
        pytest.param(
            [
                hello_bytes(worker_id="later-bad"),
                registry_pb2.WorkerMessage(
                    result=registry_pb2.TaskResult(task_id="t", queue_ms=math.nan)
                ).SerializeToString(),
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            id="nan-result-after-hello",
        ),
    ],
)
async def test_bad_registry_input_closes_only_that_stream(
    router, workers, channel, inference, assert_eventually, frames, expected
):
    good = await workers("good")
    await assert_eventually(registered(router, "good"))
    error = await _raw_connect(channel, frames)
    if expected is not None:
        assert error.code() is expected, error
    else:
        assert error.code() is not grpc.StatusCode.OK
    ids = {v.worker_id for v in router.registry.snapshot()}
    assert ids == {"good"}, "a bad stream must never stay registered"
    response = await inference.Encode(encode_request(), timeout=5)
    assert response.worker_id == "good"
    assert good.ended is None


async def test_an_operation_the_model_does_not_support_is_refused(
    router, workers, inference, assert_eventually
):
    await workers("w1")
    await assert_eventually(registered(router, "w1"))
    request = encode_request(model="urchade/gliner_multi-v2.1")  # an extraction model
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await inference.Encode(request, timeout=5)
    error = from_rpc_error(caught.value)
    assert error.code is ErrorCode.UNSUPPORTED_OPERATION
    assert "extract" in error.message


async def test_cluster_health_counts_config_writes_and_pool_events(router):
    from mesh.pools.spec import parse_pool_spec

    document = (
        "sie_id: acme/tiny-embedder\n"
        "profiles:\n"
        "  default:\n"
        "    adapter_path: sie_server.adapters.sentence_transformer:SentenceTransformerDenseAdapter\n"
        "    max_batch_tokens: 1024\n"
    )
    reply = await router.config_service.add_model_config(document, content_type="application/yaml")
    assert reply.created_profiles == ("default",)
    await router.pools.service.create_pool(parse_pool_spec(name="tenant-a", gpus={"l4": 1}))
    await router.pools.service.renew_pool("tenant-a")
    await router.pools.service.delete_pool("tenant-a")

    health = router.cluster_health()
    deltas = {(row.kind, row.result): row.count for row in health.config_deltas}
    assert deltas.get(("write", "applied")) == 1
    events = {row.kind: row.count for row in health.pool_events}
    assert events == {"created": 1, "renewed": 1, "deleted": 1}
    assert health.config_epoch >= 1 and not health.config_bootstrap_degraded
