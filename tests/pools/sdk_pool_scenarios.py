"""Pool scenarios run by the real sie-sdk, in its own Python 3.12 venv.

    .venv-sdk-0.10.1/bin/python tests/pools/sdk_pool_scenarios.py BASE_URL SCENARIO '{"json": "args"}'

Standalone on purpose (the SDK and the standard library only), like
tests/sdk/sdk_scenarios.py; the last stdout line is the JSON outcome.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from sie_sdk import SIEClient
from sie_sdk.client import errors as sdk_errors


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "error": type(exc).__name__,
        "message": str(exc),
        "status_code": getattr(exc, "status_code", None),
        "code": getattr(exc, "code", None),
    }


def _wait_active(client: SIEClient, name: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        info = client.get_pool(name)
        if info is not None and info["status"]["state"] == "active":
            return dict(info)
        if time.monotonic() > deadline:
            raise RuntimeError(f"pool {name} not active within {timeout_s} s: {info}")
        time.sleep(0.05)  # a poll interval under a deadline, not a wait for an outcome


def pool_lifecycle(base_url: str, args: dict[str, Any]) -> dict[str, Any]:
    name, model, count = args["pool"], args["model"], args.get("requests", 8)
    out: dict[str, Any] = {}
    with SIEClient(base_url) as client:
        client.create_pool(name, args["gpus"])
        out["active"] = _wait_active(client, name, args.get("timeout_s", 20.0))
        out["pinned"] = [
            client.encode(model, {"id": f"p{i}", "text": f"pool text {i}"}, gpu=f"{name}/l4")["dense"].shape[
                0
            ]
            for i in range(count)
        ]
        out["shared"] = [
            client.encode(model, {"id": f"s{i}", "text": f"shared text {i}"}, gpu="l4")["dense"].shape[0]
            for i in range(count)
        ]
        try:
            client.encode(model, {"id": "x", "text": "no such worker"}, gpu=f"{name}/a100")
            out["pinned_missing_profile"] = None
        except sdk_errors.SIEError as exc:
            out["pinned_missing_profile"] = _error(exc)
        client.create_pool(name, args["gpus"])  # again: a renewal, not an error
        out["renewed"] = client.get_pool(name)
        out["deleted"] = client.delete_pool(name)
        out["after_delete"] = client.get_pool(name)
        out["deleted_again"] = client.delete_pool(name)
        try:
            client.delete_pool("default")
            out["delete_default"] = None
        except sdk_errors.SIEError as exc:
            out["delete_default"] = _error(exc)
    return out


SCENARIOS = {"pool_lifecycle": pool_lifecycle}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[2] not in SCENARIOS:
        print(f"usage: {argv[0]} BASE_URL {{{','.join(SCENARIOS)}}} JSON_ARGS", file=sys.stderr)
        return 2
    outcome = SCENARIOS[argv[2]](argv[1], json.loads(argv[3]))
    print(json.dumps(outcome, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
