"""Start mesh processes for system tests and stop them (only them, by PID)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on (\S+:\d+)")


@dataclass
class MeshProcess:
    name: str
    process: subprocess.Popen
    log_path: Path
    address: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.process.pid, sig)

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@dataclass
class ProcessGroup:
    """Processes a test started; `stop_all` ends them in reverse order."""

    log_dir: Path
    processes: list[MeshProcess] = field(default_factory=list)

    def start(self, name: str, args: list[str], *, env: dict[str, str] | None = None) -> MeshProcess:
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("w")
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        if env:
            full_env.update(env)
        process = subprocess.Popen(
            [sys.executable, "-m", "mesh.cli", *args],
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
        log_file.close()
        started = MeshProcess(name, process, log_path)
        self.processes.append(started)
        return started

    def start_router(
        self, name: str = "router", extra: list[str] | None = None, timeout_s: float = 30.0
    ) -> MeshProcess:
        router = self.start(name, ["router", "--port", "0", "--host", "127.0.0.1", *(extra or [])])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = _LISTENING.search(router.log())
            if match:
                router.address = match.group(1)
                return router
            if not router.alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"router did not start:\n{router.log()}")

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()
