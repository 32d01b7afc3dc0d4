"""The SIE pool endpoints (`/v1/pools...`) over a `PoolsApi`.

    app = create_app(mesh, config)
    add_pool_routes(app, router.pools.service)         # in-process: the router's PoolService
    add_pool_routes(app, GrpcPoolsClient(addresses))   # own process: mesh.v1.Pools on the routers

Call it before the app starts. The routes join the app's route table
(`add_routes`), so the auth middleware and the OpenAPI document cover them.
The handlers raise `MeshError` and the app's edge middleware renders it in
the SIE envelope (`{"detail": {"code", "message"}}`, `X-SIE-Error-Code`,
Retry-After when retryable), so pool errors look like every other error.

Access: a pool is the tenant's own capacity, managed with the key the SDK
sends for inference, so create, renew and delete are INFERENCE routes and
get and list are READ routes (SIE_AUTH_TOKEN or SIE_ADMIN_TOKEN either way).

Replies follow the wire reference: create 201 Pool (also when it renewed
an existing pool), renew 200 `{"message": "Pool renewed"}`, get 200 Pool,
delete 200, list `{"pools": [Pool...]}`; 404 POOL_NOT_FOUND for an unknown
pool, 403 for deleting `default`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from http_facade.app import add_routes
from http_facade.codecs import decode_body, encode_reply, reply_codec, request_codec
from http_facade.routes import Access, RouteSpec
from mesh.errors import ErrorCode, MeshError
from mesh.pools import PoolsApi, pool_spec_from_json

__all__ = ["POOLS_KEY", "POOL_ROUTES", "PoolsApi", "add_pool_routes"]

_T = TypeVar("_T")

POOLS_KEY = web.AppKey("pools", PoolsApi)
"""The app's `PoolsApi`, for handlers and tests that need it."""

POOL_ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "create_pool",
        "POST",
        "/v1/pools",
        Access.INFERENCE,
        "Create a tenant pool, or renew it (and update its spec) when it exists.",
    ),
    RouteSpec("list_pools", "GET", "/v1/pools", Access.READ, "Every tenant pool."),
    RouteSpec("get_pool", "GET", "/v1/pools/{name}", Access.READ, "One tenant pool."),
    RouteSpec(
        "renew_pool", "POST", "/v1/pools/{name}/renew", Access.INFERENCE, "Keep a pool for another TTL."
    ),
    RouteSpec(
        "delete_pool",
        "DELETE",
        "/v1/pools/{name}",
        Access.INFERENCE,
        "Delete a pool; its workers return to the shared fleet.",
    ),
)
"""The pool endpoints; names are handler names, route names and metrics `endpoint` labels."""

# A pool spec is a few hundred bytes; anything near this is not one.
MAX_POOL_BODY_BYTES = 64 * 1024


class _PoolEndpoints:
    def __init__(self, pools: PoolsApi, timeout_s: float) -> None:
        self._pools = pools
        self._timeout_s = timeout_s

    async def _call(self, call: Awaitable[_T]) -> _T:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except TimeoutError:
            raise MeshError(
                ErrorCode.STORE_UNAVAILABLE,
                f"the pool operation did not finish within {self._timeout_s:g} s",
            ) from None

    @staticmethod
    def _reply(request: web.Request, payload: dict[str, Any], status: int = 200) -> web.Response:
        codec = reply_codec(request.headers.get("Accept"))
        return web.Response(
            status=status, body=encode_reply(payload, codec), headers={"Content-Type": codec.content_type}
        )

    @staticmethod
    async def _body(request: web.Request) -> object:
        length = request.content_length
        if length is not None and length > MAX_POOL_BODY_BYTES:
            raise MeshError(
                ErrorCode.PAYLOAD_TOO_LARGE, f"a pool spec is at most {MAX_POOL_BODY_BYTES} bytes"
            )
        codec = request_codec(request.headers.get("Content-Type"))
        raw = await request.content.read(MAX_POOL_BODY_BYTES + 1)
        if len(raw) > MAX_POOL_BODY_BYTES:
            raise MeshError(
                ErrorCode.PAYLOAD_TOO_LARGE, f"a pool spec is at most {MAX_POOL_BODY_BYTES} bytes"
            )
        return decode_body(raw, codec)

    async def create_pool(self, request: web.Request) -> web.Response:
        spec = pool_spec_from_json(await self._body(request))
        created = await self._call(self._pools.create_pool(spec))
        # 201 for a renewal too: the reference (and sie-sdk) treat create as idempotent.
        return self._reply(request, created.pool.to_json(), status=201)

    async def list_pools(self, request: web.Request) -> web.Response:
        pools = await self._call(self._pools.list_pools())
        return self._reply(request, {"pools": [pool.to_json() for pool in pools]})

    async def get_pool(self, request: web.Request) -> web.Response:
        pool = await self._call(self._pools.get_pool(request.match_info["name"]))
        return self._reply(request, pool.to_json())

    async def renew_pool(self, request: web.Request) -> web.Response:
        # The SDK sends no body; one that comes anyway is ignored, not parsed.
        await self._call(self._pools.renew_pool(request.match_info["name"]))
        return self._reply(request, {"message": "Pool renewed"})

    async def delete_pool(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self._call(self._pools.delete_pool(name))
        return self._reply(request, {"message": f"Pool {name.lower()!r} deleted"})


def add_pool_routes(app: web.Application, pools: PoolsApi, *, timeout_s: float = 10.0) -> None:
    """Add the `/v1/pools` endpoints to a facade app built by `create_app` (before it starts).

    `timeout_s` bounds each pool operation; past it the client gets a retryable 503.
    """
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    app[POOLS_KEY] = pools
    add_routes(app, POOL_ROUTES, _PoolEndpoints(pools, timeout_s))
