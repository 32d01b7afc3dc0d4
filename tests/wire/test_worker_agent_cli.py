"""`python -m worker_agent`: flag checking, and a real process against a fake router."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from mesh.catalog import MINILM_MODEL_ID
from worker_agent.backends.dense_output import tensor_to_array
from worker_agent.backends.fake import FakeBackend, fake_embedding
from worker_agent.cli import add_worker_arguments, agent_config_from_args, backend_from_args
from worker_agent.testing import FakeRouter, encode_task

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[2]


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser(prog="worker")
    add_worker_arguments(built)
    return built


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: --router"),
        (["--router", "localhost"], "'localhost' is not HOST:PORT"),
        (["--router", "a:1,a:1"], "a router is listed twice"),
        (["--router", "a:99999"], "is not HOST:PORT"),
        (["--router", "a:1", "--max-batch-requests", "0"], "0 is below the minimum of 1"),
        (["--router", "a:1", "--queue-capacity", "many"], "'many' is not an integer"),
        (["--router", "a:1", "--max-batch-wait-ms", "-1"], "must be a finite number >= 0"),
        (["--router", "a:1", "--backend", "tpu-magic"], "invalid choice: 'tpu-magic'"),
        (["--router", "a:1", "--model-path", "org/model"], "'org/model' is not MODEL_ID=DIR"),
        (["--router", "a:1", "--model-path", "org/model=/no/such/dir"], "/no/such/dir is not a directory"),
        (["--router", "a:1", "--health-port", "70000"], "70000 is not a port number"),
    ],
)
def test_bad_flags_are_usage_errors_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_flags_become_the_agent_config_and_backend(tmp_path):
    args = parser().parse_args(
        [
            "--router",
            "r1:7070,[::1]:7071",
            "--bundle",
            "full",
            "--machine-profile",
            "l4",
            "--pool",
            "tenant-a",
            "--backend",
            "fake",
            "--worker-id",
            "w-9",
            "--max-batch-requests",
            "16",
            "--max-batch-tokens",
            "2048",
            "--max-batch-wait-ms",
            "5",
            "--queue-capacity",
            "64",
            "--gpu-count",
            "4",
            "--preload",
            "--fake-dims",
            "8",
            "--fake-fixed-latency-ms",
            "10",
            "--fake-fail-load",
            "org/broken",
            "--model-path",
            f"org/model={tmp_path}",
        ]
    )
    config = agent_config_from_args(args)
    assert config.routers == ("r1:7070", "[::1]:7071")
    assert (config.bundle, config.machine_profile, config.pool, config.worker_id) == (
        "full",
        "l4",
        "tenant-a",
        "w-9",
    )
    assert (config.max_batch_requests, config.max_batch_tokens, config.queue_capacity) == (16, 2048, 64)
    assert config.max_batch_wait_s == pytest.approx(0.005) and config.gpu_count == 4 and config.preload
    backend = backend_from_args(args)
    assert isinstance(backend, FakeBackend)
    assert backend.config.dims == 8 and backend.config.fixed_latency_s == pytest.approx(0.010)
    assert backend.config.fail_load == frozenset({"org/broken"})
    assert args.model_path == [("org/model", tmp_path)]


def worker_command(*flags: str) -> list[str]:
    return [sys.executable, "-m", "worker_agent", *flags]


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


async def test_unknown_bundle_exits_2_without_a_traceback():
    process = await asyncio.create_subprocess_exec(
        *worker_command("--router", "127.0.0.1:1", "--backend", "fake", "--bundle", "no-such-bundle"),
        cwd=REPO_ROOT,
        env=worker_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert b"unknown bundle 'no-such-bundle'" in stderr and b"Traceback" not in stderr


async def test_a_worker_process_serves_and_drains_on_sigterm():
    async with FakeRouter.serving() as router:
        process = await asyncio.create_subprocess_exec(
            *worker_command(
                "--router",
                router.address,
                "--backend",
                "fake",
                "--preload",
                "--worker-id",
                "cli-worker",
                "--drain-grace-s",
                "5",
            ),
            cwd=REPO_ROOT,
            env=worker_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            hello = await router.wait_hello(timeout_s=30)
            assert hello.worker_id == "cli-worker" and hello.backend == "fake"
            await router.wait_status(lambda status: status.ready, timeout_s=10)
            result = await router.run_task(encode_task(MINILM_MODEL_ID, ["from a process"]))
            vector = tensor_to_array(result.encode.items[0].dense)
            assert np.array_equal(vector, fake_embedding(MINILM_MODEL_ID, "from a process"))
            process.send_signal(signal.SIGTERM)
            await router.wait_for(lambda: bool(router.drain_notices), timeout_s=10)
            output, _ = await asyncio.wait_for(process.communicate(), 20)
            assert process.returncode == 0, output.decode()
            assert b"Traceback" not in output
            await router.wait_for(lambda: router.stream.closed, timeout_s=5)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
