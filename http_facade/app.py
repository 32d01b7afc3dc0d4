"""The aiohttp application: SIE REST + WebSocket API over a MeshService.

`create_app(mesh, config)` builds it. The mesh is either the router itself
(in-process, no hop) or a `GrpcMeshClient` to router replicas; the facade
cannot tell and does not care.

Request flow: `edge` middleware (request id, error envelope, metrics) ->
`authenticate` middleware (only installed when a token is configured) ->
handler (decode body -> mesh.v1 proto -> MeshService -> reply). Handlers
raise MeshError for everything a client should see; the edge renders it.

A client that disconnects cancels its handler task (handler_cancellation,
which `start_http_server` and aiohttp's test server enable), and the
cancellation propagates into the awaited MeshService call, which cancels the
work on the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from http_facade.bodies import BodyLimits, parse_encode, parse_extract, parse_score
from http_facade.cluster_views import health_view, model_info_view, status_frame
from http_facade.codecs import Codec, decode_body, encode_reply, reply_codec, request_codec
from http_facade.config import FacadeConfig
from http_facade.error_replies import error_response, from_http_exception, provisioning_response
from http_facade.metrics import METRICS_CONTENT_TYPE, FacadeMetrics
from http_facade.openapi import build_openapi
from http_facade.replies import encode_reply as encode_reply_view
from http_facade.replies import extract_reply, score_reply
from http_facade.routes import ROUTES, Access, RouteSpec
from mesh import __version__ as MESH_VERSION
from mesh.api import MeshService
from mesh.errors import ErrorCode, MeshError
from mesh.v1 import cluster_pb2, common_pb2

if TYPE_CHECKING:
    from mesh.config_api import ConfigApi
    from mesh.pools import PoolsApi

log = logging.getLogger(__name__)

T = TypeVar("T")

REQUEST_ID_HEADER = "X-SIE-Request-Id"
SERVER_VERSION_HEADER = "X-SIE-Server-Version"
WORKER_HEADER = "X-SIE-Worker"
MACHINE_PROFILE_HEADER = "X-SIE-MACHINE-PROFILE"
POOL_HEADER = "X-SIE-Pool"
SDK_VERSION_HEADER = "X-SIE-SDK-Version"
SERVER_SOFTWARE = f"inference-mesh/{MESH_VERSION}"

# Request ids are echoed into headers and logs: visible ASCII, bounded.
_REQUEST_ID = re.compile(r"[!-~]{1,128}")
_MACHINE_PROFILE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_POOL_NAME = re.compile(r"[a-z0-9_-]{1,128}")
_MAX_MODEL_PATH = 512
_REJECTED_CODES = frozenset(
    {
        ErrorCode.INVALID_INPUT,
        ErrorCode.PAYLOAD_TOO_LARGE,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        ErrorCode.UNAUTHENTICATED,
        ErrorCode.PERMISSION_DENIED,
        ErrorCode.NOT_FOUND,
        ErrorCode.METHOD_NOT_ALLOWED,
        ErrorCode.RATE_LIMIT,
    }
)


@dataclass(slots=True)
class FacadeState:
    """What changes while the app runs."""

    draining: bool = False
    """Set when shutdown begins: /readyz answers 503 so balancers stop sending."""


MESH_KEY = web.AppKey("mesh", MeshService)
CONFIG_KEY = web.AppKey("config", FacadeConfig)
METRICS_KEY = web.AppKey("metrics", FacadeMetrics)
STATE_KEY = web.AppKey("state", FacadeState)
ROUTE_TABLE_KEY = web.AppKey("route_table", list)
"""Every RouteSpec the app serves (core, config, pools): the source of its auth rules and OpenAPI document."""
ACCESS_KEY = web.AppKey("access", dict)
"""Route name -> Access, kept in step with ROUTE_TABLE_KEY by `add_routes`."""


def add_routes(app: web.Application, specs: tuple[RouteSpec, ...], handlers: object) -> None:
    """Serve `specs` with the same-named methods of `handlers`; auth and OpenAPI follow."""
    for route in specs:
        app.router.add_route(route.method, route.path, getattr(handlers, route.name), name=route.name)
        app[ROUTE_TABLE_KEY].append(route)
        app[ACCESS_KEY][route.name] = route.access


REQUEST_ID_KEY = web.RequestKey("request_id", str)
MACHINE_PROFILE_KEY = web.RequestKey("machine_profile", str)
POOL_KEY = web.RequestKey("pool", str)


_REQUEST_ID_PREFIX = secrets.token_hex(6)
_request_numbers = itertools.count(1)


def new_request_id() -> str:
    """Unique per process start and request; ids name requests in logs, they guard nothing,
    so a random prefix and a counter serve without a system call per request."""
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers):012x}"


def routing_target(headers: Any) -> tuple[str, str]:
    """(machine_profile, pool) from X-SIE-MACHINE-PROFILE and X-SIE-Pool, lower-cased.

    `gpu="tenant/l4"` in the SDK sends both headers; a `/` in the profile
    header alone means pool/profile too.
    """
    profile = headers.get(MACHINE_PROFILE_HEADER, "")
    pool = headers.get(POOL_HEADER, "")
    if not profile and not pool:
        return "", ""
    profile = profile.strip().lower()
    pool = pool.strip().lower()
    if "/" in profile:
        profile_pool, _, profile = profile.partition("/")
        if pool and profile_pool != pool:
            raise MeshError(
                ErrorCode.INVALID_INPUT,
                f"{POOL_HEADER} {pool!r} disagrees with pool {profile_pool!r} in {MACHINE_PROFILE_HEADER}",
                field=POOL_HEADER,
            )
        pool = profile_pool
    if profile and not _MACHINE_PROFILE.fullmatch(profile):
        raise MeshError(
            ErrorCode.INVALID_INPUT,
            f"{MACHINE_PROFILE_HEADER}: {profile[:64]!r} is not a machine profile name",
            field=MACHINE_PROFILE_HEADER,
        )
    if pool and not _POOL_NAME.fullmatch(pool):
        raise MeshError(
            ErrorCode.INVALID_INPUT,
            f"{POOL_HEADER}: pool names match ^[A-Za-z0-9_-]{{1,128}}$",
            field=POOL_HEADER,
        )
    return profile, pool


def _model_path(request: web.Request) -> str:
    model = request.match_info["model"]
    if len(model) > _MAX_MODEL_PATH or not model.isprintable() or " " in model:
        raise MeshError(
            ErrorCode.INVALID_INPUT,
            "model: expected [bundle:/]org/model[:profile] without spaces or control characters",
            field="model",
        )
    return model


class ClusterStatusHub:
    """Feeds WS /ws/cluster-status: one mesh read per interval, fanned out to
    every subscriber, and no reads at all while nobody listens."""

    def __init__(self, mesh: MeshService, interval_s: float, read_timeout_s: float) -> None:
        self._mesh = mesh
        self._interval_s = interval_s
        self._read_timeout_s = read_timeout_s
        self._sockets: set[web.WebSocketResponse] = set()
        self._listening = asyncio.Event()

    def subscribe(self, socket: web.WebSocketResponse) -> None:
        self._sockets.add(socket)
        self._listening.set()

    def unsubscribe(self, socket: web.WebSocketResponse) -> None:
        self._sockets.discard(socket)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._sockets:
                self._listening.clear()
                await self._listening.wait()
            started = loop.time()
            frame = await self._frame()
            if frame is not None:
                await asyncio.gather(*(self._send(socket, frame) for socket in tuple(self._sockets)))
            await asyncio.sleep(max(0.0, self._interval_s - (loop.time() - started)))

    async def _frame(self) -> str | None:
        try:
            async with asyncio.timeout(self._read_timeout_s):
                health = await self._mesh.cluster_health()
        except (MeshError, TimeoutError) as exc:
            # Subscribers keep their socket; the next tick tries again.
            log.warning("cluster status unavailable: %s", exc)
            return None
        except Exception:
            # A mesh bug must not end the stream for every subscriber at once.
            log.exception("cluster status read failed")
            return None
        return json.dumps(status_frame(health, time.time()), separators=(",", ":"))

    async def _send(self, socket: web.WebSocketResponse, frame: str) -> None:
        try:
            async with asyncio.timeout(self._interval_s):
                await socket.send_str(frame)
        except Exception:  # noqa: BLE001 - however a send fails, this subscriber is done
            # A subscriber that cannot take a frame in one interval is gone or
            # stuck; dropping it keeps one slow client from delaying the rest.
            self.unsubscribe(socket)
            await socket.close()

    async def close_all(self) -> None:
        sockets, self._sockets = tuple(self._sockets), set()
        for socket in sockets:
            await socket.close(code=1001, message=b"server shutting down")


class _Endpoints:
    """The handlers, bound to one app's dependencies (no per-request lookups)."""

    def __init__(
        self,
        mesh: MeshService,
        config: FacadeConfig,
        state: FacadeState,
        metrics: FacadeMetrics,
        hub: ClusterStatusHub,
    ) -> None:
        self._mesh = mesh
        self._config = config
        self._state = state
        self._metrics = metrics
        self._hub = hub
        self._limits = BodyLimits(config.max_items, config.max_score_items, config.max_labels)
        self._budget_s = config.request_timeout_s
        self._openapi: bytes | None = None

    # -- inference ---------------------------------------------------------

    def _too_large(self, what: str) -> MeshError:
        return MeshError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"{what} is over the {self._config.max_body_bytes} byte limit"
        )

    async def _read_body(self, request: web.Request) -> object:
        length = request.content_length
        if length is not None and length > self._config.max_body_bytes:
            raise self._too_large(f"request body of {length} bytes")  # on the header alone: never read
        codec = request_codec(request.headers.get("Content-Type"))
        content = request.content
        if content.is_eof():
            # The whole body is already here (an SDK request's nearly always
            # is): take it as it lies, without the read loop.
            body = content.read_nowait()
            if len(body) > self._config.max_body_bytes:  # chunked, or grown by decompression
                raise self._too_large("request body")
            return decode_body(body, codec)
        # A chunked body has no length up front; the app's client_max_size
        # stops reading it at the limit (HTTPRequestEntityTooLarge -> 413).
        return decode_body(await request.read(), codec)

    def _target(self, request: web.Request, target: common_pb2.RoutingTarget) -> None:
        profile, pool = routing_target(request.headers)
        # Always set: the edge reads it for every inference request's metrics.
        request[MACHINE_PROFILE_KEY] = profile
        if profile or pool:
            target.machine_profile = profile
            target.pool = pool
            request[POOL_KEY] = pool

    def _reply(self, payload: dict[str, Any], codec: Codec, response: Any) -> web.Response:
        headers = {"Content-Type": codec.content_type, WORKER_HEADER: response.worker_id}
        if response.HasField("timing"):
            timing = response.timing
            headers["Server-Timing"] = (
                f"queue;dur={timing.queue_ms:.3f}, inference;dur={timing.inference_ms:.3f}, "
                f"total;dur={timing.total_ms:.3f}"
            )
        return web.Response(body=encode_reply(payload, codec), headers=headers)

    async def _infer(
        self,
        request: web.Request,
        parse: Callable[[str, object, BodyLimits], Any],
        call: Callable[..., Awaitable[Any]],
        render: Callable[[Any, str, int, bool], dict[str, Any]],
    ) -> web.Response:
        model = _model_path(request)
        codec = reply_codec(request.headers.get("Accept"))
        proto = parse(model, await self._read_body(request), self._limits)
        self._target(request, proto.target)
        # No timer here: MeshService answers within timeout_s (see mesh.api).
        response = await call(proto, timeout_s=self._budget_s, request_id=request[REQUEST_ID_KEY])
        payload = render(response, model, len(proto.items), codec is Codec.MSGPACK)
        return self._reply(payload, codec, response)

    async def encode(self, request: web.Request) -> web.Response:
        return await self._infer(request, parse_encode, self._mesh.encode, encode_reply_view)

    async def score(self, request: web.Request) -> web.Response:
        return await self._infer(request, parse_score, self._mesh.score, score_reply)

    async def extract(self, request: web.Request) -> web.Response:
        return await self._infer(request, parse_extract, self._mesh.extract, extract_reply)

    # -- reads -------------------------------------------------------------

    async def _cluster_read(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._config.cluster_read_timeout_s):
                return await call
        except TimeoutError:
            raise MeshError(ErrorCode.DEADLINE_EXCEEDED, "the mesh did not answer in time") from None

    async def list_models(self, request: web.Request) -> web.Response:
        models = await self._cluster_read(self._mesh.list_models())
        return web.json_response({"models": [model_info_view(model) for model in models.models]})

    async def get_model(self, request: web.Request) -> web.Response:
        model = await self._cluster_read(self._mesh.get_model(_model_path(request)))
        return web.json_response(model_info_view(model))

    async def health(self, request: web.Request) -> web.Response:
        health = await self._cluster_read(self._mesh.cluster_health())
        return web.json_response(health_view(health))

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self._state.draining:
            raise MeshError(ErrorCode.NOT_READY, "draining")
        if not self._mesh.ready():
            raise MeshError(ErrorCode.NOT_READY, "no router reachable")
        return web.json_response({"status": "ready"})

    async def metrics(self, request: web.Request) -> web.Response:
        health: cluster_pb2.ClusterHealth | None = None
        demand: Iterable[cluster_pb2.PendingDemand] = ()
        try:
            health = await self._cluster_read(self._mesh.cluster_health())
            demand = await self._cluster_read(self._mesh.pending_demand())
        except MeshError as exc:
            log.warning("metrics scrape without fleet gauges: %s", exc)
        self._metrics.update_cluster(health, demand)
        return web.Response(body=self._metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def openapi(self, request: web.Request) -> web.Response:
        if self._openapi is None:
            # Built on first use: routes added after create_app (config, pools) belong in it.
            self._openapi = json.dumps(build_openapi(tuple(request.app[ROUTE_TABLE_KEY]))).encode()
        return web.Response(body=self._openapi, headers={"Content-Type": "application/json"})

    async def cluster_status(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(heartbeat=30.0)
        # The edge cannot add headers once the upgrade is sent.
        socket.headers[REQUEST_ID_HEADER] = request[REQUEST_ID_KEY]
        socket.headers[SERVER_VERSION_HEADER] = self._config.server_version
        await socket.prepare(request)
        self._hub.subscribe(socket)
        try:
            async for _ in socket:
                pass  # nothing to read; iterating answers pings and notices the close
        finally:
            self._hub.unsubscribe(socket)
        return socket


def _edge_middleware(config: FacadeConfig, metrics: FacadeMetrics) -> Any:
    server_version = config.server_version

    def render(error: MeshError, request: web.Request) -> web.Response:
        if error.code is ErrorCode.PROVISIONING:
            pool = request.get(POOL_KEY, "")
            profile = request.get(MACHINE_PROFILE_KEY, "")
            if pool:
                # A pinned pool is the tenant's own capacity: waiting for the
                # fleet to provision would never fill it.
                error = MeshError(
                    ErrorCode.POOL_UNAVAILABLE,
                    f"pool {pool!r} has no worker for this request: {error.message}",
                )
            else:
                metrics.observe_provisioning(profile)
                return provisioning_response(error, request.headers.get(SDK_VERSION_HEADER), profile)
        if error.code in _REJECTED_CODES:
            metrics.observe_rejected(error.code.value.lower())
        return error_response(error)

    @web.middleware
    async def edge(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Any:
        started = time.perf_counter()
        request_id = request.headers.get(REQUEST_ID_HEADER)
        if request_id is None or not _REQUEST_ID.fullmatch(request_id):
            request_id = new_request_id()
        request[REQUEST_ID_KEY] = request_id
        try:
            response = await handler(request)
        except MeshError as error:
            response = render(error, request)
        except web.HTTPException as exc:
            response = render(from_http_exception(exc, request.method, request.path), request)
        except asyncio.CancelledError:
            # The client went away (or the server is stopping): nobody reads a
            # reply, but the request still counts, as nginx's 499.
            metrics.observe_request(
                _endpoint(request), 499, request.get(MACHINE_PROFILE_KEY, ""), time.perf_counter() - started
            )
            raise
        except Exception:
            log.exception("unhandled error in %s %s (request %s)", request.method, request.path, request_id)
            response = render(
                MeshError(ErrorCode.INTERNAL, f"internal error; quote request id {request_id}"), request
            )
        if not response.prepared:
            headers = response.headers
            headers[REQUEST_ID_HEADER] = request_id
            headers[SERVER_VERSION_HEADER] = server_version
            headers["Server"] = SERVER_SOFTWARE
        metrics.observe_request(
            _endpoint(request),
            response.status,
            request.get(MACHINE_PROFILE_KEY, ""),
            time.perf_counter() - started,
        )
        return response

    return edge


def _endpoint(request: web.Request) -> str:
    return request.match_info.route.name or "unmatched"


def _auth_middleware(config: FacadeConfig) -> Any:
    auth_token = config.auth_token.encode() if config.auth_token else None
    admin_token = config.admin_token.encode() if config.admin_token else None

    def token_matches(presented: bytes, expected: bytes | None) -> bool:
        # compare_digest on both, always: the time taken says nothing about
        # which token (if any) a guess came close to.
        return hmac.compare_digest(presented, expected or b"\0" * 32) and expected is not None

    @web.middleware
    async def authenticate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Any:
        # Unknown routes count as reads, so probing paths without a token
        # learns nothing about which exist.
        access = request.app[ACCESS_KEY].get(request.match_info.route.name or "", Access.READ)
        if access is Access.OPEN:
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise MeshError(ErrorCode.UNAUTHENTICATED, "expected 'Authorization: Bearer <token>'")
        presented = token.encode("utf-8", "surrogateescape")
        is_admin = token_matches(presented, admin_token)
        is_user = token_matches(presented, auth_token)
        if is_admin or (is_user and (access is not Access.ADMIN or admin_token is None)):
            return await handler(request)
        raise MeshError(ErrorCode.PERMISSION_DENIED, "the bearer token does not grant this request")

    return authenticate


def create_app(
    mesh: MeshService,
    config: FacadeConfig | None = None,
    *,
    config_api: ConfigApi | None = None,
    pools_api: PoolsApi | None = None,
) -> web.Application:
    """The facade app over `mesh` (config: FacadeConfig() when omitted), with the
    Config API routes when `config_api` is given and the pool routes when
    `pools_api` is. Serve it with
    `start_http_server`, or any aiohttp runner with handler_cancellation=True."""
    config = config or FacadeConfig()
    state = FacadeState()
    metrics = FacadeMetrics()
    hub = ClusterStatusHub(mesh, config.cluster_status_interval_s, config.cluster_read_timeout_s)
    middlewares = [_edge_middleware(config, metrics)]
    if config.auth_enabled:
        middlewares.append(_auth_middleware(config))
    # client_max_size bounds chunked bodies, which carry no Content-Length.
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_bytes)
    app[MESH_KEY] = mesh
    app[CONFIG_KEY] = config
    app[METRICS_KEY] = metrics
    app[STATE_KEY] = state
    app[ROUTE_TABLE_KEY] = []
    app[ACCESS_KEY] = {}

    add_routes(app, ROUTES, _Endpoints(mesh, config, state, metrics, hub))
    if config_api is not None:
        from http_facade.config_routes import add_config_routes

        add_config_routes(app, config_api)
    if pools_api is not None:
        from http_facade.pool_routes import add_pool_routes

        add_pool_routes(app, pools_api)

    async def run_status_hub(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(hub.run(), name="cluster-status-hub")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def begin_shutdown(app: web.Application) -> None:
        state.draining = True
        # Open WebSockets would otherwise hold shutdown for its whole timeout.
        await hub.close_all()

    app.cleanup_ctx.append(run_status_hub)
    app.on_shutdown.append(begin_shutdown)
    return app
