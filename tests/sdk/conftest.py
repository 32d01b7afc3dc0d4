"""The real sie-sdk against a facade on 127.0.0.1.

The SDK needs Python >= 3.12 and must not share the project's venv, so each
release gets its own venv, built once and kept in the repository's ignored
`.venv-sdk-<version>/`. Scenarios run in a subprocess (tests/sdk/sdk_scenarios.py)
and report JSON. The facade runs in a thread with its own event loop because
the test thread blocks on that subprocess.

`run_sdk(version, base_url, scenario, **args)` is the seam the system tests
reuse to point the same scenarios at a real mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from http_facade import FacadeConfig, create_app, start_http_server
from http_facade.testing import FakeMesh

REPO = Path(__file__).resolve().parents[2]
SCENARIOS_SCRIPT = Path(__file__).resolve().parent / "sdk_scenarios.py"
SDK_VERSIONS = ("0.10.1", "0.6.4")
SCENARIO_TIMEOUT_S = 90.0
_INSTALL_TIMEOUT_S = 600.0


def find_python312() -> str | None:
    """SIE_SDK_PYTHON, a pyenv 3.12, or python3.12 on PATH: the first that really runs 3.12+.

    Probed, not trusted: a pyenv shim answers `which` and then refuses to run.
    """
    candidates = [os.environ.get("SIE_SDK_PYTHON")]
    for root in (os.path.expanduser("~/.pyenv"), "/root/.pyenv"):
        candidates += sorted(glob.glob(f"{root}/versions/3.1[2-9]*/bin/python3"), reverse=True)
    candidates.append(shutil.which("python3.12"))
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; sys.exit(sys.version_info < (3, 12))"],
            check=False,
            capture_output=True,
            timeout=30,
        )
        if probe.returncode == 0:
            return candidate
    return None


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('sie-sdk'))"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def sdk_python(version: str) -> Path:
    """The interpreter of a venv holding sie-sdk==version, building the venv if needed."""
    venv = REPO / f".venv-sdk-{version}"
    python = venv / "bin" / "python"
    if _installed_version(python) == version:
        return python
    base = find_python312()
    if base is None:
        pytest.skip("sie-sdk needs Python 3.12 and none was found (set SIE_SDK_PYTHON)")
    venv.mkdir(exist_ok=True)
    # Two pytest runs building the same venv at once would corrupt it.
    with open(venv / ".build-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_version(python) == version:
            return python
        steps = [
            [base, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", f"sie-sdk=={version}"],
        ]
        for step in steps:
            done = subprocess.run(
                step, check=False, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S
            )
            if done.returncode != 0:
                pytest.fail(
                    f"building the sie-sdk {version} venv failed: {' '.join(step)}\n{done.stderr[-3000:]}"
                )
    if _installed_version(python) != version:
        pytest.fail(f"sie-sdk {version} is not importable from {python}")
    return python


def run_sdk(python: Path, base_url: str, scenario: str, **args: Any) -> dict[str, Any]:
    """Run one scenario of sdk_scenarios.py; returns what it printed."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SIE_", "PYTHON"))}
    done = subprocess.run(
        [str(python), str(SCENARIOS_SCRIPT), base_url, scenario, json.dumps(args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
        env=env,
    )
    if done.returncode != 0:
        raise AssertionError(f"scenario {scenario} failed ({done.returncode}):\n{done.stderr[-5000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class FacadeThread:
    """A facade app served by start_http_server on a free port, in a thread of its own."""

    def __init__(self, mesh: FakeMesh, config: FacadeConfig) -> None:
        self.mesh = mesh
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="facade", daemon=True)
        self._thread.start()
        self._runner: web.AppRunner = self._run(start_http_server(create_app(mesh, config), "127.0.0.1", 0))
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


SdkRunner = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def sdk() -> SdkRunner:
    """sdk(base_url, scenario, **args) with sie-sdk 0.10.1."""
    python = sdk_python("0.10.1")
    return lambda base_url, scenario, **args: run_sdk(python, base_url, scenario, **args)


@pytest.fixture(scope="session")
def sdk_0_6_4() -> SdkRunner:
    """sdk_0_6_4(base_url, scenario, **args) with sie-sdk 0.6.4 (the 202 provisioning era)."""
    python = sdk_python("0.6.4")
    return lambda base_url, scenario, **args: run_sdk(python, base_url, scenario, **args)


@pytest.fixture
def start_facade() -> Iterator[Callable[..., FacadeThread]]:
    """start_facade(mesh=FakeMesh(), config=FacadeConfig()) -> a running FacadeThread."""
    started: list[FacadeThread] = []

    def start(mesh: FakeMesh | None = None, config: FacadeConfig | None = None) -> FacadeThread:
        facade = FacadeThread(mesh or FakeMesh(), config or FacadeConfig())
        started.append(facade)
        return facade

    yield start
    for facade in started:
        facade.stop()


@pytest.fixture
def facade(start_facade: Callable[..., FacadeThread]) -> FacadeThread:
    return start_facade()
