"""The Config API: append-only model configs, read-only bundles, live propagation.

    store = open_config_store(coordination_store, store_dir=config_store_dir_from_env())
    service = ConfigService(store, registry=..., router_id=..., catalog=..., on_change=...)
    await service.start()                                # restore, then follow the store
    reply = await service.add_model_config(yaml_text, idempotency_key="k1")

- `ConfigApi`: what front ends call; `ConfigService` (in the router) and
  `GrpcConfigClient` (mesh.v1.Config, for a facade in its own process)
  implement it. Replies are the frozen dataclasses of `api.py`.
- `ConfigStore`: `CoordinatedConfigStore` (keys `config/models/*` and
  `config/epoch` of a CoordinationStore) or `DirectoryConfigStore`.
- `ConfigServicer`: mesh.v1.Config on the router's gRPC server.

See `settings.py` for SIE_CONFIG_STORE_DIR and SIE_CONFIG_RESTORE.
"""

from mesh.config_api.acks import AckProgress, WorkerConfigView, ack_progress, bundle_ack_status
from mesh.config_api.api import (
    AddModelReply,
    BundleAckStatus,
    BundleDocumentReply,
    BundleListing,
    ConfigApi,
    EpochReply,
    ExportReply,
    ModelAckStatus,
    ModelDocumentReply,
    ModelListing,
    ResolveReply,
)
from mesh.config_api.coordinated_store import CoordinatedConfigStore
from mesh.config_api.directory_store import DirectoryConfigStore
from mesh.config_api.document_intake import IntakeLimits, admit_document, is_supported_media_type
from mesh.config_api.grpc_client import GrpcConfigClient, GrpcConfigClientConfig
from mesh.config_api.grpc_servicer import ConfigServicer, add_config_servicer
from mesh.config_api.service import ConfigService, ConfigStats
from mesh.config_api.settings import (
    CONFIG_RESTORE_ENV,
    CONFIG_STORE_DIR_ENV,
    ConfigServiceConfig,
    config_store_dir_from_env,
    open_config_store,
)
from mesh.config_api.store import (
    ConfigChange,
    ConfigSnapshot,
    ConfigStore,
    ConfigWatch,
    StoredModel,
    WriteBase,
)

__all__ = [
    "CONFIG_RESTORE_ENV",
    "CONFIG_STORE_DIR_ENV",
    "AckProgress",
    "AddModelReply",
    "BundleAckStatus",
    "BundleDocumentReply",
    "BundleListing",
    "ConfigApi",
    "ConfigChange",
    "ConfigService",
    "ConfigServiceConfig",
    "ConfigServicer",
    "ConfigSnapshot",
    "ConfigStats",
    "ConfigStore",
    "ConfigWatch",
    "CoordinatedConfigStore",
    "DirectoryConfigStore",
    "EpochReply",
    "ExportReply",
    "GrpcConfigClient",
    "GrpcConfigClientConfig",
    "IntakeLimits",
    "ModelAckStatus",
    "ModelDocumentReply",
    "ModelListing",
    "ResolveReply",
    "StoredModel",
    "WorkerConfigView",
    "WriteBase",
    "ack_progress",
    "add_config_servicer",
    "admit_document",
    "bundle_ack_status",
    "config_store_dir_from_env",
    "is_supported_media_type",
    "open_config_store",
]
