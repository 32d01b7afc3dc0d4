"""Acceptance: the real sie-sdk 0.10.1 against the facade over a real router with worker agents.

The facade runs inside the router's process (in-process PoolsApi and
MeshService, the `mesh router --http-port` shape), in a thread with its own
event loop because the test thread blocks on the SDK subprocess. The SDK
venv comes from tests/sdk (built once, reused).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from http_facade import FacadeConfig, create_app, start_http_server
from http_facade.pool_routes import add_pool_routes
from mesh.catalog import load_catalog
from mesh.router import Router, RouterConfig
from mesh.services import RegistrySettings
from tests.pools.conftest import FAST_LINK, FAST_POOLS, MODEL
from tests.sdk.conftest import sdk_python
from worker_agent import AgentConfig, FakeBackend, WorkerAgent

pytestmark = [pytest.mark.sdk, pytest.mark.timeout(180)]

SCENARIOS = Path(__file__).resolve().parent / "sdk_pool_scenarios.py"
WORKERS = {"l4-a": "l4", "l4-b": "l4", "l4-c": "l4"}


class MeshThread:
    """A router, its worker agents and the in-process facade, on an event loop in a thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pool-mesh", daemon=True)
        self._thread.start()
        self.router: Router | None = None
        self.agents: dict[str, WorkerAgent] = {}
        self._runner = None
        self._run(self._start())
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    def _run(self, coroutine: Any, timeout_s: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=timeout_s)

    async def _start(self) -> None:
        self.router = Router(
            RouterConfig(
                host="127.0.0.1",
                port=0,
                router_id="sdk-router",
                registry=RegistrySettings(silence_timeout_s=2.0, hello_timeout_s=2.0),
                pools=FAST_POOLS,
            )
        )
        await self.router.start()
        for worker_id, profile in WORKERS.items():
            agent = WorkerAgent(
                AgentConfig(
                    routers=(self.router.address,),
                    worker_id=worker_id,
                    machine_profile=profile,
                    preload=True,
                    link=FAST_LINK,
                ),
                FakeBackend(),
                load_catalog(),
            )
            await agent.start()
            self.agents[worker_id] = agent
        deadline = time.monotonic() + 20
        while {v.worker_id for v in self.router.registry.snapshot() if v.healthy} != set(WORKERS):
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not register")
            await asyncio.sleep(0.02)
        app = create_app(self.router.service, FacadeConfig())
        add_pool_routes(app, self.router.pools.service)
        self._runner = await start_http_server(app, "127.0.0.1", 0)

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        for agent in self.agents.values():
            await agent.stop()
        if self.router is not None:
            await self.router.stop(grace_s=0.2)

    def batches(self) -> dict[str, int]:
        return {worker_id: agent.backend.batches_run for worker_id, agent in self.agents.items()}

    def stop(self) -> None:
        try:
            self._run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


@pytest.fixture
def mesh_thread():
    mesh = MeshThread()
    yield mesh
    mesh.stop()


def run_scenario(base_url: str, scenario: str, **args: Any) -> dict[str, Any]:
    python = sdk_python("0.10.1")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SIE_", "PYTHON"))}
    done = subprocess.run(
        [str(python), str(SCENARIOS), base_url, scenario, json.dumps(args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, f"scenario {scenario} failed:\n{done.stderr[-5000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pool_lifecycle_through_the_sdk(mesh_thread):
    before = mesh_thread.batches()
    out = run_scenario(mesh_thread.base_url, "pool_lifecycle", pool="Eval-Bench", gpus={"l4": 2}, model=MODEL)

    active = out["active"]
    assert active["name"] == "eval-bench"
    assert active["spec"]["gpus"] == {"l4": 2} and active["spec"]["ttl_seconds"] == 1200
    assigned = {worker["name"] for worker in active["status"]["assigned_workers"]}
    assert len(assigned) == 2 and assigned <= set(WORKERS)
    assert all(worker["gpu"] == "l4" for worker in active["status"]["assigned_workers"])
    shared = set(WORKERS) - assigned

    # Every request got its vector. The SDK sends them one at a time, so each is one batch on
    # the worker that ran it: the pool's workers ran exactly the 8 pinned ones, the shared
    # worker exactly the 8 shared ones -- isolation both ways.
    assert out["pinned"] == [384] * 8 and out["shared"] == [384] * 8
    after = mesh_thread.batches()
    assert sum(after[w] - before[w] for w in assigned) == 8
    assert sum(after[w] - before[w] for w in shared) == 8

    error = out["pinned_missing_profile"]
    assert error is not None and error["status_code"] == 503 and error["code"] == "POOL_UNAVAILABLE", error

    assert out["renewed"]["status"]["created_at"] == active["status"]["created_at"]
    assert out["deleted"] is True
    assert out["after_delete"] is None
    assert out["deleted_again"] is False
    assert out["delete_default"] is not None and "default" in out["delete_default"]["message"]
