"""The README's curl examples, exactly as written, against a real mesh with the real model.

The commands are parsed out of README.md's "Run a local mesh" section, so
editing the README without the code (or the code without the README) fails
here. `mesh up` listens on fixed ports; this test starts `mesh router --port 0
--http-port <free>` and one real-model worker instead, and points the
README's base URL at that facade. Every command runs through the `curl`
binary; each known endpoint has a check of its reply's shape, and a command
with no check fails until one is written.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from mesh.catalog import MINILM_MODEL_ID
from mesh.cli import build_parser
from tests.system.processes import ProcessGroup

pytestmark = [pytest.mark.system, pytest.mark.model, pytest.mark.timeout(150)]

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "Run a local mesh"
WORKER_ID = "readme-worker"
READY_TIMEOUT_S = 120.0
"""Two shared cores: router and worker start, then the real model loads (~6 s alone)."""
CURL_TIMEOUT_S = 60


def readme_section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def curl_commands(section: str) -> list[list[str]]:
    """Every `curl` command of the section's sh blocks, continuation lines joined, split as sh would."""
    commands = []
    for block in re.findall(r"```(?:sh|bash|shell)\n(.*?)```", section, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "curl":
                commands.append(words)
    return commands


def readme_base_url() -> str:
    """The facade address `mesh up` serves by default, as the README spells it."""
    up = build_parser().parse_args(["up"])
    return f"http://127.0.0.1:{up.http_port}"


COMMANDS = curl_commands(readme_section(README.read_text(), SECTION))


def command_path(command: list[str]) -> str:
    (url,) = [word for word in command if word.startswith("http")]
    return urlsplit(url).path


# -- reply checks, one per README endpoint ---------------------------------------


def check_health(reply: dict[str, Any]) -> None:
    assert reply["type"] == "gateway"
    assert reply["status"] == "healthy"
    (worker,) = reply["workers"]
    assert worker["name"] == WORKER_ID and worker["healthy"] is True
    assert worker["gpu"] == "cpu" and worker["bundle"] == "default"
    assert worker["loaded_models"] == [MINILM_MODEL_ID]


def check_encode(reply: dict[str, Any]) -> None:
    assert reply["model"].lower() == MINILM_MODEL_ID.lower()
    (item,) = reply["items"]
    assert item["id"] == "d1"
    dense = item["dense"]
    assert (dense["dims"], dense["dtype"], len(dense["values"])) == (384, "float32", 384)
    assert np.linalg.norm(np.array(dense["values"], dtype=np.float64)) == pytest.approx(1.0, abs=1e-4)


def check_score(reply: dict[str, Any]) -> None:
    assert reply["query_id"] == "q"
    assert [(entry["item_id"], entry["rank"]) for entry in reply["scores"]] == [("a", 0), ("b", 1)]
    first, second = (entry["score"] for entry in reply["scores"])
    assert first > second


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "/health": check_health,
    "/v1/encode/": check_encode,
    "/v1/score/": check_score,
}


def check_for(path: str) -> Callable[[dict[str, Any]], None]:
    for prefix, check in CHECKS.items():
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return check
    raise AssertionError(f"the README curls {path}, which this test has no check for: add one")


# -- the mesh ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=5) as reply:
            workers = json.load(reply)["workers"]
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return any(worker["name"] == WORKER_ID and worker["loaded_models"] for worker in workers)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    group = ProcessGroup(tmp_path_factory.mktemp("readme-mesh"))
    try:
        http_port = free_port()
        router = group.start_router(extra=["--http-port", str(http_port)])
        worker = group.start(
            "worker",
            [
                "worker",
                "--router",
                router.address,
                "--backend",
                "sentence-transformers",
                "--machine-profile",
                "cpu",
                "--bundle",
                "default",
                "--worker-id",
                WORKER_ID,
                "--preload",
            ],
        )
        url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not worker_ready(url):
            assert worker.alive() and router.alive(), f"{worker.log()[-3000:]}\n{router.log()[-3000:]}"
            assert time.monotonic() < deadline, f"worker not ready in {READY_TIMEOUT_S:g} s:\n{worker.log()}"
            time.sleep(0.2)
        yield url
    finally:
        group.stop_all()


# -- tests --------------------------------------------------------------------------


def test_readme_has_the_three_examples_on_the_mesh_up_address():
    assert [command_path(command) for command in COMMANDS] == [
        "/health",
        f"/v1/encode/{MINILM_MODEL_ID}",
        f"/v1/score/{MINILM_MODEL_ID}",
    ]
    base = readme_base_url()
    for command in COMMANDS:
        assert any(word.startswith(base + "/") for word in command), (base, command)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary")
@pytest.mark.parametrize("command", COMMANDS, ids=[command_path(command) for command in COMMANDS])
def test_readme_curl_command(base_url, command):
    readme_base = readme_base_url()
    args = [
        word.replace(readme_base, base_url, 1) if word.startswith(readme_base) else word for word in command
    ]
    # Status on a last line of its own; the README's flags stay as written.
    args += ["-w", "\n%{http_code}", "--max-time", str(CURL_TIMEOUT_S)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=CURL_TIMEOUT_S + 10, check=False)
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    assert status == "200", done.stdout
    check_for(command_path(command))(json.loads(body))
