"""REST routes of the Config API (sie-wire.md, "Config API") over a `ConfigApi`.

    app = create_app(mesh, config)
    add_config_routes(app, router.config_service)     # in-process
    add_config_routes(app, grpc_config_client)        # facade in its own process

| route | access | reply |
|---|---|---|
| POST /v1/configs/models | admin | 201 created / 200 nothing new; YAML or JSON body |
| GET /v1/configs/models | read | `{"models":[{"model_id","profiles","source"}]}` |
| GET /v1/configs/models/{id} | read | the model's YAML |
| GET /v1/configs/models/{id}/status | read | per-bundle ACK view |
| GET /v1/configs/bundles | read | `{"bundles":[{"bundle_id","priority","adapter_count","source",...}]}` |
| GET /v1/configs/bundles/{id} | read | the bundle's YAML |
| POST /v1/configs/resolve | read | `{"model","resolved_bundle","compatible_bundles","profiles"}` |
| GET /v1/configs/epoch | read | `{"epoch","bundles_hash"}` |
| GET /v1/configs/export | read | `{"epoch","bundles","models","bundle_config_hashes"}` |

Errors are MeshErrors, rendered by the app's edge middleware (the one
envelope, `http_facade.error_replies`). Reads are guarded by the app's auth
middleware, which treats routes it does not list as reads. The write checks
the admin token itself as well, with the middleware's rule (admin token; the
auth token when no admin token is configured), so it is protected whether or
not the middleware's table lists it (`CONFIG_ACCESS_BY_ROUTE` is that row).

Model ids contain slashes, so `{id}` matches across them; a GET whose path
ends in `/status` is the status of the id before it, unless no such model
exists and the whole path names one (a model called `org/status`).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from http_facade.app import CONFIG_KEY, add_routes
from http_facade.codecs import decode_body, request_codec
from http_facade.config import FacadeConfig
from http_facade.routes import Access, RouteSpec
from mesh.config_api import ConfigApi, is_supported_media_type
from mesh.errors import ErrorCode, MeshError

T = TypeVar("T")

CONFIG_API_KEY = web.AppKey("config_api", ConfigApi)
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
YAML_CONTENT_TYPE = "application/yaml"

# Headroom over the router's own bounds (store deadlines, the 3 s ACK wait):
# these guards only catch a Config API that never answers.
_WRITE_GUARD_S = 30.0
# A model document is a few KiB; the service enforces its own (smaller) limit.
_MAX_DOCUMENT_BODY_BYTES = 1024 * 1024
_STATUS_SUFFIX = "/status"

CONFIG_ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "config_add_model",
        "POST",
        "/v1/configs/models",
        Access.ADMIN,
        "Append a model config (YAML or JSON).",
    ),
    RouteSpec(
        "config_list_models", "GET", "/v1/configs/models", Access.READ, "Model configs and their source."
    ),
    # Before the plain model route: `{model_id:.+}` would swallow the suffix.
    RouteSpec(
        "config_model_status",
        "GET",
        "/v1/configs/models/{model_id:.+}/status",
        Access.READ,
        "Per-bundle ACK view of a model's config.",
    ),
    RouteSpec(
        "config_get_model",
        "GET",
        "/v1/configs/models/{model_id:.+}",
        Access.READ,
        "One model config as YAML.",
    ),
    RouteSpec(
        "config_list_bundles",
        "GET",
        "/v1/configs/bundles",
        Access.READ,
        "Bundles and their connected workers.",
    ),
    RouteSpec(
        "config_get_bundle", "GET", "/v1/configs/bundles/{bundle_id}", Access.READ, "One bundle as YAML."
    ),
    RouteSpec("config_resolve", "POST", "/v1/configs/resolve", Access.READ, "Where a model path would run."),
    RouteSpec("config_epoch", "GET", "/v1/configs/epoch", Access.READ, "Config epoch and bundles hash."),
    RouteSpec(
        "config_export", "GET", "/v1/configs/export", Access.READ, "Snapshot of bundles and model configs."
    ),
)

CONFIG_ACCESS_BY_ROUTE: dict[str, Access] = {route.name: route.access for route in CONFIG_ROUTES}
"""Rows for the auth middleware's ACCESS_BY_ROUTE."""


def check_write_access(request: web.Request, config: FacadeConfig) -> None:
    """The admin rule of the facade's auth middleware, for the one write route.

    No token configured: open (development). Otherwise the bearer token must
    be the admin token, or the auth token when no admin token is configured.
    """
    if not config.auth_enabled:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MeshError(ErrorCode.UNAUTHENTICATED, "expected 'Authorization: Bearer <token>'")
    expected = config.admin_token if config.admin_token is not None else config.auth_token
    assert expected is not None  # auth_enabled
    # compare_digest: the time taken says nothing about how close a guess came.
    if not hmac.compare_digest(
        token.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    ):
        raise MeshError(ErrorCode.PERMISSION_DENIED, "writing configs needs the admin token")


class _ConfigEndpoints:
    def __init__(self, api: ConfigApi, config: FacadeConfig) -> None:
        self._api = api
        self._config = config

    async def _read(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._config.cluster_read_timeout_s):
                return await call
        except TimeoutError:
            raise MeshError(ErrorCode.DEADLINE_EXCEEDED, "the Config API did not answer in time") from None

    async def config_add_model(self, request: web.Request) -> web.Response:
        check_write_access(request, self._config)
        content_type = request.headers.get("Content-Type", "")
        if not is_supported_media_type(content_type):
            raise MeshError(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type {content_type.partition(';')[0].strip()[:100]!r} is not supported; "
                "send application/yaml or application/json",
                field="Content-Type",
            )
        length = request.content_length
        if length is not None and length > _MAX_DOCUMENT_BODY_BYTES:
            raise MeshError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"a model document of {length} bytes is over the {_MAX_DOCUMENT_BODY_BYTES} byte limit",
            )
        # A chunked body has no length up front; the app's client_max_size bounds the read.
        raw = await request.read()
        if len(raw) > _MAX_DOCUMENT_BODY_BYTES:
            raise MeshError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"a model document is limited to {_MAX_DOCUMENT_BODY_BYTES} bytes",
            )
        try:
            document = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MeshError(ErrorCode.INVALID_INPUT, "the document is not UTF-8", field="document") from None
        try:
            async with asyncio.timeout(_WRITE_GUARD_S):
                reply = await self._api.add_model_config(
                    document,
                    idempotency_key=request.headers.get(IDEMPOTENCY_KEY_HEADER, ""),
                    content_type=content_type,
                )
        except TimeoutError:
            raise MeshError(
                ErrorCode.STORE_UNAVAILABLE, "the config write did not finish in time; it may still land"
            ) from None
        return web.json_response(reply.to_json(), status=reply.http_status)

    async def config_list_models(self, request: web.Request) -> web.Response:
        models = await self._read(self._api.list_models())
        return web.json_response({"models": [model.to_json() for model in models]})

    async def config_get_model(self, request: web.Request) -> web.Response:
        reply = await self._read(self._api.get_model(request.match_info["model_id"]))
        return web.Response(text=reply.yaml, content_type=YAML_CONTENT_TYPE)

    async def config_model_status(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        try:
            status = await self._read(self._api.model_status(model_id))
        except MeshError as error:
            if error.code is not ErrorCode.MODEL_NOT_FOUND:
                raise
            # Perhaps the id itself ends in /status: then this is a plain GET of it.
            try:
                reply = await self._read(self._api.get_model(model_id + _STATUS_SUFFIX))
            except MeshError:
                raise error from None
            return web.Response(text=reply.yaml, content_type=YAML_CONTENT_TYPE)
        return web.json_response(status.to_json())

    async def config_list_bundles(self, request: web.Request) -> web.Response:
        bundles = await self._read(self._api.list_bundles())
        return web.json_response({"bundles": [bundle.to_json() for bundle in bundles]})

    async def config_get_bundle(self, request: web.Request) -> web.Response:
        reply = await self._read(self._api.get_bundle(request.match_info["bundle_id"]))
        return web.Response(text=reply.yaml, content_type=YAML_CONTENT_TYPE)

    async def config_resolve(self, request: web.Request) -> web.Response:
        body: Any = decode_body(await request.read(), request_codec(request.headers.get("Content-Type")))
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            raise MeshError(
                ErrorCode.INVALID_INPUT, 'expected {"model": "[bundle:/]org/model[:profile]"}', field="model"
            )
        reply = await self._read(self._api.resolve(model))
        return web.json_response(reply.to_json())

    async def config_epoch(self, request: web.Request) -> web.Response:
        return web.json_response((await self._read(self._api.epoch())).to_json())

    async def config_export(self, request: web.Request) -> web.Response:
        return web.json_response((await self._read(self._api.export())).to_json())


def add_config_routes(app: web.Application, config_api: ConfigApi) -> None:
    """Add the Config API routes to an app made by `create_app` (before it starts)."""
    app[CONFIG_API_KEY] = config_api
    add_routes(app, CONFIG_ROUTES, _ConfigEndpoints(config_api, app[CONFIG_KEY]))
