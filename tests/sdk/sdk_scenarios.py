"""Client scenarios run by the real sie-sdk, in its own Python 3.12 venv.

    .venv-sdk-0.10.1/bin/python tests/sdk/sdk_scenarios.py BASE_URL SCENARIO ['{"json": "args"}']

Each scenario is a function of (base_url, args) that drives `SIEClient` the
way an application would and returns what it saw as JSON; the last stdout
line is that JSON. They know nothing about what serves BASE_URL: the facade
over a fake mesh today, a real router with workers tomorrow.

Standalone on purpose: it imports only the SDK and the standard library.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from sie_sdk import SIEClient
from sie_sdk.client import errors as sdk_errors

Scenario = Callable[[str, dict[str, Any]], dict[str, Any]]
SCENARIOS: dict[str, Scenario] = {}


class _WarningLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


WARNINGS = _WarningLog()


def scenario(function: Scenario) -> Scenario:
    SCENARIOS[function.__name__] = function
    return function


def _client(base_url: str, args: dict[str, Any]) -> SIEClient:
    kwargs: dict[str, Any] = {"api_key": args.get("api_key")}
    if "timeout_s" in args:
        kwargs["timeout_s"] = args["timeout_s"]
    return SIEClient(base_url, **kwargs)


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "error": type(exc).__name__,
        "message": str(exc),
        "status_code": getattr(exc, "status_code", None),
        "code": getattr(exc, "code", None),
        "retry_after": getattr(exc, "retry_after", None),
    }


def _array(value: Any) -> dict[str, Any]:
    return {"values": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}


def _encode_result(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": result.get("id"),
        "model": result.get("model"),
        "timing": result.get("timing"),
    }
    if "dense" in result:
        out["dense"] = _array(result["dense"])
    if "sparse" in result:
        out["sparse"] = {
            "indices": _array(result["sparse"]["indices"]),
            "values": _array(result["sparse"]["values"]),
        }
    if "multivector" in result:
        out["multivector"] = _array(result["multivector"])
    request = result.get("request")
    if request:
        out["request_id"] = request.get("id")
    return out


@scenario
def encode_single(base_url: str, args: dict[str, Any]) -> dict[str, Any]:
    with _client(base_url, args) as client:
        try:
            result = client.encode(
                args["model"],
                {"id": "d1", "text": args.get("text", "hello world")},
                gpu=args.get("gpu"),
                wait_for_capacity=args.get("wait_for_capacity", True),
                provision_timeout_s=args.get("provision_timeout_s"),
            )
        except sdk_errors.SIEError as exc:
            return _error(exc)
    return _encode_result(result)


@scenario
def encode_batch(base_url: str, args: dict[str, Any]) -> dict[str, Any]:
    items = [{"id": f"d{index}", "text": text} for index, text in enumerate(args["texts"])]
    with _client(base_url, args) as client:
        results = client.encode(
            args["model"],
            items,
            output_types=args.get("output_types"),
            output_dtype=args.get("output_dtype"),
            is_query=args.get("is_query"),
            gpu=args.get("gpu"),
        )
    return {"results": [_encode_result(result) for result in results]}


@scenario
def encode_landing(base_url: str, args: dict[str, Any]) -> dict[str, Any]:
    """Encode `count` texts one request at a time with `gpu`; which worker answered each.

    The worker comes from the X-SIE-Worker reply header, read by a response hook
    on an httpx client handed to the SDK (`http_client`, sie-sdk >= 0.10).
    """
    import httpx  # the SDK's own transport

    workers: list[str | None] = []

    def record(response: httpx.Response) -> None:
        if "/v1/encode/" in response.request.url.path:
            workers.append(response.headers.get("X-SIE-Worker"))

    http_client = httpx.Client(base_url=base_url, event_hooks={"response": [record]})
    vectors = []
    with SIEClient(base_url, api_key=args.get("api_key"), http_client=http_client) as client:
        for index in range(args["count"]):
            result = client.encode(
                args["model"], {"id": f"d{index}", "text": f"text {index}"}, gpu=args.get("gpu")
            )
            vectors.append(result["dense"].tolist())
    return {"workers": workers, "dense": vectors}


@scenario
def score(base_url: str, args: dict[str, Any]) -> dict[str, Any]:
    with _client(base_url, args) as client:
        result = client.score(
            args["model"], {"id": "q", "text": args["query"]}, [{"text": text} for text in args["texts"]]
        )
    return {"model": result["model"], "query_id": result.get("query_id"), "scores": list(result["scores"])}


@scenario
def extract(base_url: str, args: dict[str, Any]) -> dict[str, Any]:
    with _client(base_url, args) as client:
        results = client.extract(
            args["model"], [{"text": text} for text in args["texts"]], labels=args["labels"]
        )
    return {
        "results": [{key: value for key, value in result.items() if key != "request"} for result in results]
    }


@scenario
def list_models(base_url: str, args: dict[str, Any]) -> dict[str, Any]:
    with _client(base_url, args) as client:
        return {"models": client.list_models()}


@scenario
def get_model(base_url: str, args: dict[str, Any]) -> dict[str, Any]:
    with _client(base_url, args) as client:
        try:
            return {"model": client.get_model(args["model"])}
        except sdk_errors.SIEError as exc:
            return _error(exc)


@scenario
def wait_for_capacity(base_url: str, args: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    with _client(base_url, args) as client:
        capacity = client.wait_for_capacity(
            args["gpu"], model=args.get("model"), timeout_s=args.get("timeout_s", 60), poll_interval_s=0.5
        )
    return {"capacity": capacity, "elapsed_s": time.monotonic() - started}


@scenario
def capacity(base_url: str, args: dict[str, Any]) -> dict[str, Any]:
    with _client(base_url, args) as client:
        return {"capacity": client.get_capacity(gpu=args.get("gpu"))}


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or argv[2] not in SCENARIOS:
        print(f"usage: {argv[0]} BASE_URL {{{','.join(SCENARIOS)}}} [JSON_ARGS]", file=sys.stderr)
        return 2
    logging.getLogger().addHandler(WARNINGS)
    args = json.loads(argv[3]) if len(argv) == 4 else {}
    outcome = SCENARIOS[argv[2]](argv[1], args)
    outcome["warnings"] = WARNINGS.messages
    print(json.dumps(outcome, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
