"""A real etcd per test, and the stores the behavioural suite runs against.

`etcd` starts /usr/bin/etcd on 127.0.0.1 with free client and peer ports and
a data dir under the test's tmp_path, waits for GET /health to say so (with
a deadline, never a fixed sleep), and can SIGKILL and restart it on the same
ports and data, or SIGSTOP / SIGCONT it to make it silent without closing
connections. Only the process it started is ever signalled, by PID.
Startup takes well under a second, so every test gets its own etcd: no state,
compaction or outage leaks from one test into another.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mesh.coordination import (
    BackoffPolicy,
    CoordinationStore,
    EtcdStore,
    EtcdStoreConfig,
    MemoryStore,
    MemoryStoreConfig,
)

ETCD_BINARY = os.environ.get("MESH_TEST_ETCD", "/usr/bin/etcd")
HEALTH_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EtcdProcess:
    """One single-member etcd this test started."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.data_dir = workdir / "data"
        self.log_path = workdir / "etcd.log"
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _args(self) -> list[str]:
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        return [
            self.binary,
            "--name=mesh-test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=mesh-test={peer_url}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-level=warn",
        ]

    def _spawn(self) -> None:
        assert not self.running, "etcd is already running"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(self._args(), stdout=log, stderr=subprocess.STDOUT)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1.0) as reply:
                return json.loads(reply.read()).get("health") == "true"
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _check_alive(self) -> None:
        if not self.running:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"etcd exited during startup:\n{tail}")

    def start(self) -> None:
        """Start and block until healthy (for sync fixtures)."""
        self._spawn()
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while not self._healthy():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd not healthy within {HEALTH_TIMEOUT_S}s; see {self.log_path}")
            time.sleep(0.02)  # poll interval of a readiness probe, not a wait for an outcome

    async def restart(self) -> None:
        """Start again on the same ports and data dir; return once healthy (keeps the loop running)."""
        self._spawn()
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while not await asyncio.to_thread(self._healthy):
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd not healthy within {HEALTH_TIMEOUT_S}s; see {self.log_path}")
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the process this fixture started, by its PID, and reap it."""
        assert self._process is not None and self.running, "etcd is not running"
        os.kill(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP it: connections stay open and go silent, as behind a blackholing network."""
        assert self._process is not None and self.running, "etcd is not running"
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None and self.running, "etcd is not running"
        os.kill(self._process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.running:
            assert self._process is not None
            os.kill(self._process.pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=10)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    if not (shutil.which(ETCD_BINARY) or os.access(ETCD_BINARY, os.X_OK)):
        pytest.skip(f"etcd binary not found at {ETCD_BINARY}")
    process = EtcdProcess(ETCD_BINARY, tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def fast_etcd_config(endpoint: str, prefix: str = "/mesh/") -> EtcdStoreConfig:
    """Production defaults, with the probe cadence shortened so tests converge quickly."""
    return EtcdStoreConfig(
        endpoints=(endpoint,),
        prefix=prefix,
        op_timeout_s=2.0,
        probe_interval_s=0.5,
        probe_timeout_s=1.0,
        reconnect=BackoffPolicy(initial_s=0.05, max_s=0.5),
    )


@dataclass
class StoreFactory:
    """Makes store clients on one backend; closes them at teardown.

    For etcd each call is a new client (a new connection, as another replica
    would have). The embedded store is one process's store by nature, so every
    "replica" shares the same MemoryStore.
    """

    kind: str
    make: Callable[..., CoordinationStore]
    etcd: EtcdProcess | None = None
    made: list[CoordinationStore] = field(default_factory=list)

    async def __call__(self, **kwargs: object) -> CoordinationStore:
        store = self.make(**kwargs)
        if store not in self.made:
            self.made.append(store)
        await store.start()
        return store

    async def close(self) -> None:
        for store in reversed(self.made):
            await store.close()


@pytest.fixture
async def etcd_stores(etcd: EtcdProcess) -> AsyncIterator[StoreFactory]:
    def make(prefix: str = "/mesh/", **kwargs: object) -> CoordinationStore:
        return EtcdStore(fast_etcd_config(etcd.endpoint, prefix), **kwargs)  # type: ignore[arg-type]

    factory = StoreFactory("etcd", make, etcd)
    yield factory
    await factory.close()


@pytest.fixture(params=["memory", "etcd"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """The behavioural suite's backend: each test runs once per implementation."""
    if request.param == "etcd":
        process: EtcdProcess = request.getfixturevalue("etcd")

        def make_etcd(prefix: str = "/mesh/", **kwargs: object) -> CoordinationStore:
            return EtcdStore(fast_etcd_config(process.endpoint, prefix), **kwargs)  # type: ignore[arg-type]

        factory = StoreFactory("etcd", make_etcd, process)
    else:
        shared: dict[str, MemoryStore] = {}

        def make_memory(prefix: str = "/mesh/", **kwargs: object) -> CoordinationStore:
            if prefix not in shared:
                shared[prefix] = MemoryStore(MemoryStoreConfig(prefix=prefix), **kwargs)  # type: ignore[arg-type]
            return shared[prefix]

        factory = StoreFactory("memory", make_memory)
    yield factory
    await factory.close()
