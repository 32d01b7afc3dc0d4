"""What both benchmarks share: the processes they start (spawn with a log, wait for
"listening on", CPU time, stop by PID), their flags and the shape of a load result."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def start(args: list[str], log_dir: Path, name: str) -> subprocess.Popen:
    """`python ARGS` from the repository root, output to LOG_DIR/NAME.log."""
    log = (log_dir / f"{name}.log").open("w")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_listening(log_path: Path, process: subprocess.Popen, timeout_s: float = 30) -> str:
    """The HOST:PORT the process logged it listens on; exits the benchmark if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = re.search(r"listening on (\S+:\d+)", log_path.read_text())
        if match:
            return match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"{log_path.name} did not start:\n{log_path.read_text()}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process we started, SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: `kind(text)`, refused unless above zero."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be above zero")
        return value

    return parse


def concurrency_levels(text: str) -> list[int]:
    """An argparse type: "1,16,64" -> [1, 16, 64], each level a positive integer."""
    parse = positive(int)
    return [int(parse(part.strip())) for part in text.split(",")]


def bench_arguments(
    description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """The flags both benchmarks take (durations, concurrency levels, fake workers),
    and whatever `extra` adds for one of them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--duration-s", type=positive(float), default=5.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument(
        "--concurrency", type=concurrency_levels, default=[1, 16, 64], help="comma-separated, e.g. 1,16,64"
    )
    parser.add_argument(
        "--workers", type=positive(int), default=1, help="fake worker agents behind the router"
    )
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    if extra is not None:
        extra(parser)
    return parser.parse_args()


@dataclass
class LoadResult:
    """One closed-loop load level against one target, measured window only."""

    label: str
    concurrency: int
    requests: int
    errors: int
    elapsed_s: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
