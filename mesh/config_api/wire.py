"""Config API replies <-> mesh.v1.Config messages (protobuf stays at this edge)."""

from __future__ import annotations

import json

from mesh.catalog import ConfigSource
from mesh.config_api.api import (
    AddModelReply,
    BundleAckStatus,
    BundleDocumentReply,
    BundleListing,
    EpochReply,
    ExportReply,
    ModelAckStatus,
    ModelDocumentReply,
    ModelListing,
    ResolveReply,
)
from mesh.errors import ErrorCode, MeshError
from mesh.v1 import config_pb2

_SOURCE_TO_PROTO = {
    ConfigSource.FILESYSTEM: config_pb2.CONFIG_SOURCE_FILESYSTEM,
    ConfigSource.API: config_pb2.CONFIG_SOURCE_API,
    ConfigSource.BUILTIN: config_pb2.CONFIG_SOURCE_BUILTIN,
}
_SOURCE_FROM_PROTO = {value: source for source, value in _SOURCE_TO_PROTO.items()}


def source_to_proto(source: ConfigSource) -> int:
    return _SOURCE_TO_PROTO[source]


def source_from_proto(value: int) -> ConfigSource:
    # An unknown or unset source from a newer peer reads as the most common one.
    return _SOURCE_FROM_PROTO.get(value, ConfigSource.FILESYSTEM)


def add_reply_to_proto(reply: AddModelReply) -> config_pb2.AddModelConfigResponse:
    message = config_pb2.AddModelConfigResponse(
        model_id=reply.model_id,
        created_profiles=list(reply.created_profiles),
        existing_profiles_skipped=list(reply.existing_profiles_skipped),
        warnings=list(reply.warnings),
        worker_ack_pending=reply.worker_ack_pending,
        eligible_bundles_count=reply.eligible_bundles_count,
        eligible_bundles_with_workers_count=reply.eligible_bundles_with_workers_count,
        acked_workers=list(reply.acked_workers),
        total_eligible=reply.total_eligible,
        pending_workers=list(reply.pending_workers),
        router_id=reply.router_id,
        unchanged=reply.unchanged,
        epoch=reply.epoch,
    )
    for profile, bundles in reply.routable_bundles_by_profile.items():
        message.routable_bundles_by_profile[profile].bundles.extend(bundles)
    return message


def add_reply_from_proto(message: config_pb2.AddModelConfigResponse) -> AddModelReply:
    return AddModelReply(
        model_id=message.model_id,
        created_profiles=tuple(message.created_profiles),
        existing_profiles_skipped=tuple(message.existing_profiles_skipped),
        warnings=tuple(message.warnings),
        routable_bundles_by_profile={
            profile: tuple(entry.bundles)
            for profile, entry in sorted(message.routable_bundles_by_profile.items())
        },
        worker_ack_pending=message.worker_ack_pending,
        eligible_bundles_count=message.eligible_bundles_count,
        eligible_bundles_with_workers_count=message.eligible_bundles_with_workers_count,
        acked_workers=tuple(message.acked_workers),
        total_eligible=message.total_eligible,
        pending_workers=tuple(message.pending_workers),
        router_id=message.router_id,
        unchanged=message.unchanged,
        epoch=message.epoch,
    )


def models_to_proto(models: tuple[ModelListing, ...]) -> config_pb2.ListModelConfigsResponse:
    return config_pb2.ListModelConfigsResponse(
        models=[
            config_pb2.ModelConfigSummary(
                model_id=model.model_id, profiles=list(model.profiles), source=source_to_proto(model.source)
            )
            for model in models
        ]
    )


def models_from_proto(message: config_pb2.ListModelConfigsResponse) -> tuple[ModelListing, ...]:
    return tuple(
        ModelListing(model.model_id, tuple(model.profiles), source_from_proto(model.source))
        for model in message.models
    )


def model_document_to_proto(reply: ModelDocumentReply) -> config_pb2.GetModelConfigResponse:
    return config_pb2.GetModelConfigResponse(
        model_id=reply.model_id, yaml=reply.yaml, source=source_to_proto(reply.source)
    )


def model_document_from_proto(message: config_pb2.GetModelConfigResponse) -> ModelDocumentReply:
    return ModelDocumentReply(message.model_id, message.yaml, source_from_proto(message.source))


def status_to_proto(status: ModelAckStatus) -> config_pb2.GetModelConfigStatusResponse:
    return config_pb2.GetModelConfigStatusResponse(
        model_id=status.model_id,
        epoch=status.epoch,
        bundles=[
            config_pb2.BundleAckStatus(
                bundle_id=bundle.bundle_id,
                expected_bundle_config_hash=bundle.expected_bundle_config_hash,
                acked_workers=list(bundle.acked_workers),
                pending_workers=list(bundle.pending_workers),
            )
            for bundle in status.bundles
        ],
    )


def status_from_proto(message: config_pb2.GetModelConfigStatusResponse) -> ModelAckStatus:
    return ModelAckStatus(
        message.model_id,
        message.epoch,
        tuple(
            BundleAckStatus(
                bundle.bundle_id,
                bundle.expected_bundle_config_hash,
                tuple(bundle.acked_workers),
                tuple(bundle.pending_workers),
            )
            for bundle in message.bundles
        ),
    )


def bundles_to_proto(bundles: tuple[BundleListing, ...]) -> config_pb2.ListBundlesResponse:
    return config_pb2.ListBundlesResponse(
        bundles=[
            config_pb2.BundleSummary(
                bundle_id=bundle.bundle_id,
                priority=bundle.priority,
                adapter_count=bundle.adapter_count,
                source=source_to_proto(bundle.source),
                connected_workers=bundle.connected_workers,
            )
            for bundle in bundles
        ]
    )


def bundles_from_proto(message: config_pb2.ListBundlesResponse) -> tuple[BundleListing, ...]:
    return tuple(
        BundleListing(
            bundle.bundle_id,
            bundle.priority,
            bundle.adapter_count,
            source_from_proto(bundle.source),
            bundle.connected_workers,
        )
        for bundle in message.bundles
    )


def bundle_document_to_proto(reply: BundleDocumentReply) -> config_pb2.GetBundleResponse:
    return config_pb2.GetBundleResponse(bundle_id=reply.bundle_id, yaml=reply.yaml)


def bundle_document_from_proto(message: config_pb2.GetBundleResponse) -> BundleDocumentReply:
    return BundleDocumentReply(message.bundle_id, message.yaml)


def resolve_to_proto(reply: ResolveReply) -> config_pb2.ResolveResponse:
    return config_pb2.ResolveResponse(
        model=reply.model,
        resolved_bundle=reply.resolved_bundle,
        compatible_bundles=list(reply.compatible_bundles),
        profiles=list(reply.profiles),
    )


def resolve_from_proto(message: config_pb2.ResolveResponse) -> ResolveReply:
    return ResolveReply(
        message.model, message.resolved_bundle, tuple(message.compatible_bundles), tuple(message.profiles)
    )


def epoch_to_proto(reply: EpochReply) -> config_pb2.GetEpochResponse:
    return config_pb2.GetEpochResponse(epoch=reply.epoch, bundles_hash=reply.bundles_hash)


def epoch_from_proto(message: config_pb2.GetEpochResponse) -> EpochReply:
    return EpochReply(message.epoch, message.bundles_hash)


def export_to_proto(reply: ExportReply) -> config_pb2.ExportResponse:
    return config_pb2.ExportResponse(
        epoch=reply.epoch, snapshot_json=json.dumps(reply.snapshot, separators=(",", ":"))
    )


def export_from_proto(message: config_pb2.ExportResponse) -> ExportReply:
    try:
        snapshot = json.loads(message.snapshot_json) if message.snapshot_json else {}
    except ValueError:
        raise MeshError(ErrorCode.INTERNAL, "the router sent an unreadable config snapshot") from None
    if not isinstance(snapshot, dict):
        raise MeshError(ErrorCode.INTERNAL, "the router sent a config snapshot that is not an object")
    return ExportReply(message.epoch, snapshot)
