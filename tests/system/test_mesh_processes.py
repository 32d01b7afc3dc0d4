"""System test: a router and three worker agents as real processes.

Workers: two on machine profile l4 (only one has the model loaded) and one
on a100. Requests must land where the routing policy says.
"""

from __future__ import annotations

import collections

import grpc
import pytest

from mesh.errors import ErrorCode, from_rpc_error
from mesh.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2, inference_pb2, inference_pb2_grpc
from tests.system.processes import ProcessGroup

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def group(tmp_path):
    group = ProcessGroup(tmp_path)
    yield group
    group.stop_all()


def worker_args(router: str, worker_id: str, profile: str, *, preload: bool) -> list[str]:
    args = [
        "worker",
        "--router",
        router,
        "--backend",
        "fake",
        "--bundle",
        "default",
        "--machine-profile",
        profile,
        "--worker-id",
        worker_id,
    ]
    return [*args, "--preload"] if preload else args


def encode(text: str, profile: str = "") -> inference_pb2.EncodeRequest:
    return inference_pb2.EncodeRequest(
        model=MODEL,
        items=[common_pb2.Item(id="x", text=text)],
        target=common_pb2.RoutingTarget(machine_profile=profile),
    )


async def test_requests_land_where_the_policy_says(group, assert_eventually):
    router = group.start_router()
    group.start("holder", worker_args(router.address, "l4-holder", "l4", preload=True))
    group.start("cold", worker_args(router.address, "l4-cold", "L4", preload=False))
    group.start("a100", worker_args(router.address, "a100-cold", "a100", preload=False))

    async with grpc.aio.insecure_channel(router.address) as channel:
        cluster = cluster_pb2_grpc.ClusterStub(channel)
        inference = inference_pb2_grpc.InferenceStub(channel)

        async def fleet_ready():
            health = (await cluster.GetHealth(cluster_pb2.GetHealthRequest(), timeout=5)).health
            healthy = {w.worker_id: w for w in health.workers if w.healthy}
            assert set(healthy) == {"l4-holder", "l4-cold", "a100-cold"}, [
                p.log()[-2000:] for p in group.processes
            ]
            holder_models = {m.name: m.state for m in healthy["l4-holder"].status.models}
            assert holder_models.get(MODEL) == 3  # MODEL_STATE_LOADED

        await assert_eventually(fleet_ready, timeout_s=60, interval_s=0.2)

        landed = collections.Counter()
        for i in range(20):
            response = await inference.Encode(encode(f"text {i}", profile="l4"), timeout=10)
            landed[response.worker_id] += 1
        # Sequential requests never fill the holder: affinity keeps them there.
        assert landed == {"l4-holder": 20}

        landed.clear()
        for i in range(5):
            response = await inference.Encode(encode(f"text {i}"), timeout=10)
            landed[response.worker_id] += 1
        assert landed == {"l4-holder": 5}

        # The a100 worker has the model only configured: the first request
        # starts the load and answers MODEL_LOADING, as SDK clients expect.
        async def served_on_a100():
            try:
                return await inference.Encode(encode("on a100", profile="A100"), timeout=10)
            except grpc.aio.AioRpcError as error:
                assert from_rpc_error(error).code is ErrorCode.MODEL_LOADING
                raise AssertionError("still loading") from error

        response = await assert_eventually(served_on_a100, timeout_s=30, interval_s=0.2)
        assert response.worker_id == "a100-cold"
        assert len(response.items[0].dense.data) == 4 * response.items[0].dense.shape[0]

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await inference.Encode(encode("nowhere", profile="h100"), timeout=10)
        assert from_rpc_error(caught.value).code is ErrorCode.PROVISIONING
