"""What a front end (the HTTP facade, the gRPC servicer) needs from the Config API.

Two implementations: `ConfigService` (in-process, the router's own) and
`GrpcConfigClient` (mesh.v1.Config over gRPC, for a facade in its own
process). Both raise `mesh.errors.MeshError` for every failure a caller
should see. Replies are plain frozen dataclasses; `to_json()` gives exactly
the fields of the wire reference (sie-wire.md, "Config API").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from mesh.catalog import ConfigSource


def public_source(source: ConfigSource) -> str:
    """The `source` the REST API shows: `filesystem` or `api`.

    The reference knows only those two. Built-ins are the config files the
    mesh ships with, so they read as `filesystem` there; gRPC keeps them apart
    (CONFIG_SOURCE_BUILTIN).
    """
    return ConfigSource.API.value if source is ConfigSource.API else ConfigSource.FILESYSTEM.value


@dataclass(frozen=True)
class AddModelReply:
    """The answer to a model config write (POST /v1/configs/models)."""

    model_id: str
    """The model id in catalog case."""
    created_profiles: tuple[str, ...]
    """Profiles this write added."""
    existing_profiles_skipped: tuple[str, ...]
    """Profiles that already existed with identical content."""
    warnings: tuple[str, ...]
    """Accepted oddities worth telling the author (ignored fields, kept stored values)."""
    routable_bundles_by_profile: dict[str, tuple[str, ...]]
    """For each profile of the document: the bundles it routes to, preferred first."""
    worker_ack_pending: bool
    """True when some eligible bundle with workers had no worker report the new config in time."""
    eligible_bundles_count: int
    """Bundles the written profiles route to."""
    eligible_bundles_with_workers_count: int
    """Of those, the bundles with at least one worker connected to the answering router."""
    acked_workers: tuple[str, ...]
    """Workers of eligible bundles that report the expected bundle config hash."""
    total_eligible: int
    """Workers of eligible bundles connected to the answering router."""
    pending_workers: tuple[str, ...]
    """Workers of eligible bundles that did not report it (yet)."""
    router_id: str
    """The replica that performed the write."""
    unchanged: bool = False
    """Nothing new was written (every profile existed): HTTP 200 rather than 201."""
    epoch: int = 0
    """Config epoch after the write."""

    @property
    def http_status(self) -> int:
        return 200 if self.unchanged else 201

    def to_json(self) -> dict[str, Any]:
        """Exactly the reference's reply fields."""
        return {
            "model_id": self.model_id,
            "created_profiles": list(self.created_profiles),
            "existing_profiles_skipped": list(self.existing_profiles_skipped),
            "warnings": list(self.warnings),
            "routable_bundles_by_profile": {
                name: list(bundles) for name, bundles in self.routable_bundles_by_profile.items()
            },
            "worker_ack_pending": self.worker_ack_pending,
            "eligible_bundles_count": self.eligible_bundles_count,
            "eligible_bundles_with_workers_count": self.eligible_bundles_with_workers_count,
            "acked_workers": list(self.acked_workers),
            "total_eligible": self.total_eligible,
            "pending_workers": list(self.pending_workers),
            "router_id": self.router_id,
        }

    def to_record(self) -> dict[str, Any]:
        """Everything, for the idempotency record a replay answers from."""
        return {**self.to_json(), "unchanged": self.unchanged, "epoch": self.epoch}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AddModelReply:
        return cls(
            model_id=str(record["model_id"]),
            created_profiles=tuple(record["created_profiles"]),
            existing_profiles_skipped=tuple(record["existing_profiles_skipped"]),
            warnings=tuple(record["warnings"]),
            routable_bundles_by_profile={
                str(name): tuple(bundles) for name, bundles in record["routable_bundles_by_profile"].items()
            },
            worker_ack_pending=bool(record["worker_ack_pending"]),
            eligible_bundles_count=int(record["eligible_bundles_count"]),
            eligible_bundles_with_workers_count=int(record["eligible_bundles_with_workers_count"]),
            acked_workers=tuple(record["acked_workers"]),
            total_eligible=int(record["total_eligible"]),
            pending_workers=tuple(record["pending_workers"]),
            router_id=str(record["router_id"]),
            unchanged=bool(record["unchanged"]),
            epoch=int(record["epoch"]),
        )


@dataclass(frozen=True)
class ModelListing:
    """One row of GET /v1/configs/models."""

    model_id: str
    """Model id in catalog case."""
    profiles: tuple[str, ...]
    """Profile names, sorted."""
    source: ConfigSource
    """Where the model came from (`api` once any profile was added through the API)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "profiles": list(self.profiles),
            "source": public_source(self.source),
        }


@dataclass(frozen=True)
class ModelDocumentReply:
    """GET /v1/configs/models/{id}: the stored form of a model."""

    model_id: str
    """Model id in catalog case."""
    yaml: str
    """The model document (declared profiles, `extends` kept)."""
    source: ConfigSource
    """Where the model came from."""


@dataclass(frozen=True)
class BundleAckStatus:
    """How far one bundle's workers (on the answering router) are with the current config."""

    bundle_id: str
    """Bundle name."""
    expected_bundle_config_hash: str
    """The hash a worker of the bundle reports once it holds the current config."""
    acked_workers: tuple[str, ...] = ()
    """Connected workers of the bundle that report it."""
    pending_workers: tuple[str, ...] = ()
    """Connected workers of the bundle that do not (yet)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "expected_bundle_config_hash": self.expected_bundle_config_hash,
            "acked_workers": list(self.acked_workers),
            "pending_workers": list(self.pending_workers),
        }


@dataclass(frozen=True)
class ModelAckStatus:
    """GET /v1/configs/models/{id}/status: the per-bundle ACK view of one model."""

    model_id: str
    """Model id in catalog case."""
    epoch: int
    """Config epoch of the answering router."""
    bundles: tuple[BundleAckStatus, ...] = ()
    """Every bundle a profile of the model routes to, lowest priority number first."""

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "epoch": self.epoch,
            "bundles": [bundle.to_json() for bundle in self.bundles],
        }


@dataclass(frozen=True)
class BundleListing:
    """One row of GET /v1/configs/bundles."""

    bundle_id: str
    """Bundle name."""
    priority: int
    """Lower wins when several bundles can serve a profile."""
    adapter_count: int
    """Adapter modules the bundle ships."""
    source: ConfigSource
    """Where the bundle was defined."""
    connected_workers: int
    """Workers of the bundle connected to the answering router."""

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "priority": self.priority,
            "adapter_count": self.adapter_count,
            "source": public_source(self.source),
            "connected_workers": self.connected_workers,
        }


@dataclass(frozen=True)
class BundleDocumentReply:
    """GET /v1/configs/bundles/{id}."""

    bundle_id: str
    """Bundle name in catalog case."""
    yaml: str
    """The bundle document."""


@dataclass(frozen=True)
class ResolveReply:
    """POST /v1/configs/resolve."""

    model: str
    """The model id in catalog case."""
    resolved_bundle: str
    """The bundle routing prefers (the override, when the path had one)."""
    compatible_bundles: tuple[str, ...]
    """Every bundle that can serve the chosen profile, preferred first."""
    profiles: tuple[str, ...]
    """The model's profiles."""

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "resolved_bundle": self.resolved_bundle,
            "compatible_bundles": list(self.compatible_bundles),
            "profiles": list(self.profiles),
        }


@dataclass(frozen=True)
class EpochReply:
    """GET /v1/configs/epoch."""

    epoch: int
    """Config epoch: bumped once per write that created something, in the store's transaction."""
    bundles_hash: str
    """One digest of every bundle and its config hash; equal on replicas that agree."""

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "bundles_hash": self.bundles_hash}


@dataclass(frozen=True)
class ExportReply:
    """GET /v1/configs/export."""

    epoch: int
    """Config epoch of the snapshot."""
    snapshot: dict[str, Any] = field(default_factory=dict)
    """`bundles`, `models` (each with its `source`) and `bundle_config_hashes`."""

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, **self.snapshot}


class ConfigApi(Protocol):
    """The Config API, in-process or remote. Every method raises MeshError on failure."""

    async def add_model_config(
        self, document: str, *, idempotency_key: str = "", content_type: str = ""
    ) -> AddModelReply:
        """Append a model document (YAML, or JSON when `content_type` says so).

        INVALID_INPUT (400): unparsable, oversized, a YAML bomb, an invalid
        model id or idempotency key. CONFIG_INVALID (422): missing fields, an
        adapter in no known bundle. CONFIG_CONFLICT (409): a stored profile
        with different content, or an idempotency key reused with another
        body. STORE_UNAVAILABLE (503): the store cannot take the write.
        """
        ...

    async def list_models(self) -> tuple[ModelListing, ...]: ...

    async def get_model(self, model_id: str) -> ModelDocumentReply:
        """MODEL_NOT_FOUND for an unknown model."""
        ...

    async def model_status(self, model_id: str) -> ModelAckStatus:
        """MODEL_NOT_FOUND for an unknown model."""
        ...

    async def list_bundles(self) -> tuple[BundleListing, ...]: ...

    async def get_bundle(self, bundle_id: str) -> BundleDocumentReply:
        """NOT_FOUND for an unknown bundle."""
        ...

    async def resolve(self, model: str) -> ResolveReply:
        """INVALID_INPUT, MODEL_NOT_FOUND or BUNDLE_CONFLICT, as inference would."""
        ...

    async def epoch(self) -> EpochReply: ...

    async def export(self) -> ExportReply: ...
