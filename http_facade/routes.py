"""The route table: one row per endpoint, the source of both the aiohttp router
and the OpenAPI document, so the two cannot drift (a test checks it too)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Access(enum.Enum):
    """Which bearer token a route needs when auth is configured."""

    OPEN = "open"
    """Probes: never behind a token (kubelets and load balancers carry none)."""
    READ = "read"
    """SIE_AUTH_TOKEN or SIE_ADMIN_TOKEN."""
    INFERENCE = "inference"
    """SIE_AUTH_TOKEN or SIE_ADMIN_TOKEN."""
    ADMIN = "admin"
    """SIE_ADMIN_TOKEN (the auth token when no admin token is configured)."""


@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    """Handler name, aiohttp route name, OpenAPI operationId and metrics `endpoint` label."""
    method: str
    path: str
    """aiohttp path; `{model:.+}` lets model ids carry slashes."""
    access: Access
    summary: str
    request_schema: str | None = None
    """Component schema of the body, for routes that take one."""
    reply_schema: str | None = None
    """Component schema of the 200 reply."""
    msgpack: bool = False
    """Whether body and reply may also be MessagePack."""
    websocket: bool = False


ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "encode",
        "POST",
        "/v1/encode/{model:.+}",
        Access.INFERENCE,
        "Encode items into dense, sparse or multivector embeddings.",
        "EncodeRequest",
        "EncodeReply",
        msgpack=True,
    ),
    RouteSpec(
        "score",
        "POST",
        "/v1/score/{model:.+}",
        Access.INFERENCE,
        "Score items against a query with a reranker; best first.",
        "ScoreRequest",
        "ScoreReply",
        msgpack=True,
    ),
    RouteSpec(
        "extract",
        "POST",
        "/v1/extract/{model:.+}",
        Access.INFERENCE,
        "Extract entities, relations, classifications or objects from items.",
        "ExtractRequest",
        "ExtractReply",
        msgpack=True,
    ),
    RouteSpec(
        "list_models", "GET", "/v1/models", Access.READ, "Models the mesh can serve.", None, "ModelList"
    ),
    RouteSpec("get_model", "GET", "/v1/models/{model:.+}", Access.READ, "One model.", None, "ModelInfo"),
    RouteSpec(
        "healthz", "GET", "/healthz", Access.OPEN, "Liveness: 200 while the process serves.", None, "Status"
    ),
    RouteSpec(
        "readyz", "GET", "/readyz", Access.OPEN, "Readiness: 200 when a router is reachable.", None, "Status"
    ),
    RouteSpec("health", "GET", "/health", Access.OPEN, "Cluster health (SIE gateway form).", None, "Health"),
    RouteSpec(
        "cluster_status",
        "GET",
        "/ws/cluster-status",
        Access.READ,
        "WebSocket: one JSON cluster status frame per second.",
        websocket=True,
    ),
    RouteSpec("metrics", "GET", "/metrics", Access.READ, "Prometheus metrics."),
    RouteSpec("openapi", "GET", "/openapi.json", Access.READ, "This document."),
)

ACCESS_BY_ROUTE: dict[str, Access] = {route.name: route.access for route in ROUTES}
