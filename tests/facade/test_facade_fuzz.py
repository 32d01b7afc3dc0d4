"""Property: whatever a client sends to any documented operation, the facade
answers below 500, with the error envelope, and never a traceback.

Requests are drawn from the OpenAPI document itself: schema-shaped bodies
with nodes swapped for arbitrary values, bodies that are not JSON at all,
odd model paths, content types and routing headers. Bounded and
derandomized, so it finishes in seconds and fails the same way every run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import string
from typing import Any
from urllib.parse import quote

import msgpack
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from http_facade import FacadeConfig, create_app
from http_facade.openapi import build_openapi
from http_facade.testing import ENCODE_MODEL, EXTRACT_MODEL, SCORE_MODEL, FakeMesh

DOCUMENT = build_openapi()
SCHEMAS = DOCUMENT["components"]["schemas"]

# Lone surrogates: valid in a JSON escape, refused by protobuf's UTF-8 strings.
_surrogates = st.sampled_from(["\ud800", "a\udc80b"])
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=8),
    _surrogates,
)
junk = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values shaped by `schema`, with any node sometimes replaced by junk."""
    return st.one_of(_shaped(schema, depth), _shaped(schema, depth), junk)


def _shaped(schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    if depth > 6:
        return junk
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return st.deferred(lambda: from_schema(SCHEMAS[name], depth + 1))
    if "anyOf" in schema:
        return st.one_of([from_schema(option, depth + 1) for option in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        properties = {name: from_schema(sub, depth + 1) for name, sub in schema["properties"].items()}
        required = {name: properties.pop(name) for name in schema.get("required", ())}
        return st.fixed_dictionaries(required, optional=properties)
    if kind == "object":
        return st.dictionaries(st.text(max_size=6), junk, max_size=3)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), depth + 1), min_size=0, max_size=4)
    if kind == "string":
        if schema.get("contentEncoding") == "base64":
            return st.binary(max_size=16).map(lambda raw: base64.b64encode(raw).decode())
        return st.text(max_size=16) | _surrogates
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers()
    if kind == "number":
        return st.floats()
    return junk


def _body_strategy(operation: dict[str, Any]) -> st.SearchStrategy[Any] | None:
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    return None if schema is None else from_schema(schema)


# Strategies are built once: rebuilding them per example makes shrinking crawl.
OPERATIONS = [
    (method.upper(), path, _body_strategy(operation))
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
]

_header_text = st.text(alphabet=string.printable.strip() + " ", max_size=40).map(str.strip)
_models = st.one_of(
    st.sampled_from(
        [ENCODE_MODEL, SCORE_MODEL, EXTRACT_MODEL, f"default:/{ENCODE_MODEL}:fast", "nobody/none"]
    ),
    st.text(min_size=1, max_size=30).filter(lambda text: text.strip("/")),
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    method, path, body = draw(st.sampled_from(OPERATIONS))
    if "{model}" in path:
        path = path.replace("{model}", quote(draw(_models).strip("/") or "m", safe="/:"))
    headers: dict[str, str] = {}
    for name in ("X-SIE-MACHINE-PROFILE", "X-SIE-Pool", "X-SIE-SDK-Version", "X-SIE-Request-Id", "Accept"):
        if draw(st.booleans()):
            headers[name] = draw(_header_text)
    data: bytes | None = None
    if body is not None or draw(st.booleans()):
        value = draw(body if body is not None else junk)
        encoding = draw(st.sampled_from(["json", "msgpack", "raw"]))
        if encoding == "msgpack":
            headers["Content-Type"] = "application/msgpack"
            try:
                # surrogatepass: a lone surrogate goes out as the invalid UTF-8 it is.
                data = msgpack.packb(value, use_bin_type=True, unicode_errors="surrogatepass")
            except OverflowError:
                encoding = "json"  # an integer past 64 bits: only JSON can carry it
        if encoding == "json":
            headers["Content-Type"] = draw(
                st.sampled_from(["application/json", "application/json; charset=utf-8"])
            )
            data = json.dumps(value, default=lambda raw: base64.b64encode(raw).decode()).encode()
        else:
            headers["Content-Type"] = draw(
                st.sampled_from(["application/json", "application/msgpack", "text/plain"])
            )
            data = draw(st.binary(max_size=64))
    return {
        "method": draw(st.sampled_from([method, method, "PUT"])),
        "path": path,
        "headers": headers,
        "data": data,
    }


async def _check(client: TestClient, request: dict[str, Any]) -> None:
    reply = await client.request(
        request["method"],
        request["path"],
        data=request["data"],
        headers=request["headers"],
        skip_auto_headers=["Content-Type"],
    )
    body = await reply.read()
    assert reply.status < 500, (request, reply.status, body[:500])
    assert b"Traceback" not in body
    if reply.status >= 400:
        envelope = json.loads(body)
        assert (
            isinstance(envelope["detail"], dict)
            and envelope["detail"]["code"] == reply.headers["X-SIE-Error-Code"]
        )


def test_no_client_input_yields_a_server_error():
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(create_app(FakeMesh(), FacadeConfig(max_items=50)), loop=loop), loop=loop)
    loop.run_until_complete(client.start_server())

    @settings(
        max_examples=1000,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(request=requests())
    def run(request: dict[str, Any]) -> None:
        loop.run_until_complete(_check(client, request))

    try:
        run()
    finally:
        loop.run_until_complete(client.close())
        loop.close()
