from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConfigSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONFIG_SOURCE_UNSPECIFIED: _ClassVar[ConfigSource]
    CONFIG_SOURCE_FILESYSTEM: _ClassVar[ConfigSource]
    CONFIG_SOURCE_API: _ClassVar[ConfigSource]
    CONFIG_SOURCE_BUILTIN: _ClassVar[ConfigSource]
CONFIG_SOURCE_UNSPECIFIED: ConfigSource
CONFIG_SOURCE_FILESYSTEM: ConfigSource
CONFIG_SOURCE_API: ConfigSource
CONFIG_SOURCE_BUILTIN: ConfigSource

class AddModelConfigRequest(_message.Message):
    __slots__ = ("document", "idempotency_key")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    document: str
    idempotency_key: str
    def __init__(self, document: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class AddModelConfigResponse(_message.Message):
    __slots__ = ("model_id", "created_profiles", "existing_profiles_skipped", "warnings", "routable_bundles_by_profile", "worker_ack_pending", "eligible_bundles_count", "eligible_bundles_with_workers_count", "acked_workers", "total_eligible", "pending_workers", "router_id", "unchanged", "epoch")
    class RoutableBundlesByProfileEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: BundleList
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[BundleList, _Mapping]] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_PROFILES_FIELD_NUMBER: _ClassVar[int]
    EXISTING_PROFILES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    ROUTABLE_BUNDLES_BY_PROFILE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ACK_PENDING_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_BUNDLES_COUNT_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_BUNDLES_WITH_WORKERS_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACKED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    PENDING_WORKERS_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    created_profiles: _containers.RepeatedScalarFieldContainer[str]
    existing_profiles_skipped: _containers.RepeatedScalarFieldContainer[str]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    routable_bundles_by_profile: _containers.MessageMap[str, BundleList]
    worker_ack_pending: bool
    eligible_bundles_count: int
    eligible_bundles_with_workers_count: int
    acked_workers: _containers.RepeatedScalarFieldContainer[str]
    total_eligible: int
    pending_workers: _containers.RepeatedScalarFieldContainer[str]
    router_id: str
    unchanged: bool
    epoch: int
    def __init__(self, model_id: _Optional[str] = ..., created_profiles: _Optional[_Iterable[str]] = ..., existing_profiles_skipped: _Optional[_Iterable[str]] = ..., warnings: _Optional[_Iterable[str]] = ..., routable_bundles_by_profile: _Optional[_Mapping[str, BundleList]] = ..., worker_ack_pending: _Optional[bool] = ..., eligible_bundles_count: _Optional[int] = ..., eligible_bundles_with_workers_count: _Optional[int] = ..., acked_workers: _Optional[_Iterable[str]] = ..., total_eligible: _Optional[int] = ..., pending_workers: _Optional[_Iterable[str]] = ..., router_id: _Optional[str] = ..., unchanged: _Optional[bool] = ..., epoch: _Optional[int] = ...) -> None: ...

class BundleList(_message.Message):
    __slots__ = ("bundles",)
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    bundles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, bundles: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelConfigsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelConfigSummary(_message.Message):
    __slots__ = ("model_id", "profiles", "source")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    profiles: _containers.RepeatedScalarFieldContainer[str]
    source: ConfigSource
    def __init__(self, model_id: _Optional[str] = ..., profiles: _Optional[_Iterable[str]] = ..., source: _Optional[_Union[ConfigSource, str]] = ...) -> None: ...

class ListModelConfigsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelConfigSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelConfigSummary, _Mapping]]] = ...) -> None: ...

class GetModelConfigRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class GetModelConfigResponse(_message.Message):
    __slots__ = ("model_id", "yaml", "source")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    yaml: str
    source: ConfigSource
    def __init__(self, model_id: _Optional[str] = ..., yaml: _Optional[str] = ..., source: _Optional[_Union[ConfigSource, str]] = ...) -> None: ...

class GetModelConfigStatusRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class BundleAckStatus(_message.Message):
    __slots__ = ("bundle_id", "expected_bundle_config_hash", "acked_workers", "pending_workers")
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_BUNDLE_CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    ACKED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    PENDING_WORKERS_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    expected_bundle_config_hash: str
    acked_workers: _containers.RepeatedScalarFieldContainer[str]
    pending_workers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, bundle_id: _Optional[str] = ..., expected_bundle_config_hash: _Optional[str] = ..., acked_workers: _Optional[_Iterable[str]] = ..., pending_workers: _Optional[_Iterable[str]] = ...) -> None: ...

class GetModelConfigStatusResponse(_message.Message):
    __slots__ = ("model_id", "bundles", "epoch")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    bundles: _containers.RepeatedCompositeFieldContainer[BundleAckStatus]
    epoch: int
    def __init__(self, model_id: _Optional[str] = ..., bundles: _Optional[_Iterable[_Union[BundleAckStatus, _Mapping]]] = ..., epoch: _Optional[int] = ...) -> None: ...

class ListBundlesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BundleSummary(_message.Message):
    __slots__ = ("bundle_id", "priority", "adapter_count", "source", "connected_workers")
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_COUNT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    priority: int
    adapter_count: int
    source: ConfigSource
    connected_workers: int
    def __init__(self, bundle_id: _Optional[str] = ..., priority: _Optional[int] = ..., adapter_count: _Optional[int] = ..., source: _Optional[_Union[ConfigSource, str]] = ..., connected_workers: _Optional[int] = ...) -> None: ...

class ListBundlesResponse(_message.Message):
    __slots__ = ("bundles",)
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    bundles: _containers.RepeatedCompositeFieldContainer[BundleSummary]
    def __init__(self, bundles: _Optional[_Iterable[_Union[BundleSummary, _Mapping]]] = ...) -> None: ...

class GetBundleRequest(_message.Message):
    __slots__ = ("bundle_id",)
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    def __init__(self, bundle_id: _Optional[str] = ...) -> None: ...

class GetBundleResponse(_message.Message):
    __slots__ = ("bundle_id", "yaml")
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    yaml: str
    def __init__(self, bundle_id: _Optional[str] = ..., yaml: _Optional[str] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ResolveResponse(_message.Message):
    __slots__ = ("model", "resolved_bundle", "compatible_bundles", "profiles")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    COMPATIBLE_BUNDLES_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    model: str
    resolved_bundle: str
    compatible_bundles: _containers.RepeatedScalarFieldContainer[str]
    profiles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., resolved_bundle: _Optional[str] = ..., compatible_bundles: _Optional[_Iterable[str]] = ..., profiles: _Optional[_Iterable[str]] = ...) -> None: ...

class GetEpochRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetEpochResponse(_message.Message):
    __slots__ = ("epoch", "bundles_hash")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_HASH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    bundles_hash: str
    def __init__(self, epoch: _Optional[int] = ..., bundles_hash: _Optional[str] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExportResponse(_message.Message):
    __slots__ = ("epoch", "snapshot_json")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_JSON_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    snapshot_json: str
    def __init__(self, epoch: _Optional[int] = ..., snapshot_json: _Optional[str] = ...) -> None: ...
