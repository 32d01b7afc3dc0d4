"""The facade's configuration: one frozen value built once, at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The SIE API level this facade speaks. The SDK compares major.minor with its
# own and warns when they differ by more than one minor version; 0.10 keeps
# sie-sdk 0.9.x to 0.11.x silent, and it is the server version the wire
# reference (sie-wire.md) was observed on. It is the API's version, not the
# mesh's: the mesh's own version rides in the `Server` header instead.
SIE_API_VERSION = "0.10.1"

AUTH_TOKEN_ENV = "SIE_AUTH_TOKEN"
ADMIN_TOKEN_ENV = "SIE_ADMIN_TOKEN"


@dataclass(frozen=True, slots=True)
class FacadeConfig:
    """How the HTTP facade answers. Every field has a production default."""

    auth_token: str | None = None
    """Bearer token for inference and reads (SIE_AUTH_TOKEN). None: not configured."""
    admin_token: str | None = None
    """Bearer token for everything, writes included (SIE_ADMIN_TOKEN). None: not configured.
    With neither token configured the facade is open (development)."""
    request_timeout_s: float = 120.0
    """Budget of one inference request inside the mesh; past it the client gets 504.
    Below the SDK's 150 s read timeout so the typed 504 reaches it first."""
    max_body_bytes: int = 32 * 1024 * 1024
    """Largest request body accepted; larger ones get 413 before being read."""
    max_items: int = 1000
    """Most items one encode or extract request may carry."""
    max_score_items: int = 1000
    """Most items one score request may carry (the SIE limit)."""
    max_labels: int = 1000
    """Most labels one extract request may carry (the SIE limit)."""
    cluster_status_interval_s: float = 1.0
    """Period of the frames on WS /ws/cluster-status."""
    cluster_read_timeout_s: float = 5.0
    """Deadline of the mesh reads behind /health, /v1/models, /metrics and the status stream."""
    server_version: str = SIE_API_VERSION
    """X-SIE-Server-Version sent on every response (see SIE_API_VERSION)."""

    def __post_init__(self) -> None:
        # Empty strings from an unset-but-exported variable mean "not configured":
        # an empty token would otherwise match an empty Authorization header.
        for name in ("auth_token", "admin_token"):
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        for name in ("request_timeout_s", "cluster_status_interval_s", "cluster_read_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("max_body_bytes", "max_items", "max_score_items", "max_labels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")

    @property
    def auth_enabled(self) -> bool:
        return self.auth_token is not None or self.admin_token is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **fields: Any) -> FacadeConfig:
        """A config whose tokens come from SIE_AUTH_TOKEN / SIE_ADMIN_TOKEN; `fields` set the rest."""
        return cls(auth_token=environ.get(AUTH_TOKEN_ENV), admin_token=environ.get(ADMIN_TOKEN_ENV), **fields)
