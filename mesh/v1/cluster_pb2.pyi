import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mesh.v1 import registry_pb2 as _registry_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetHealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetHealthResponse(_message.Message):
    __slots__ = ("health",)
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    health: ClusterHealth
    def __init__(self, health: _Optional[_Union[ClusterHealth, _Mapping]] = ...) -> None: ...

class WorkerSummary(_message.Message):
    __slots__ = ("worker_id", "instance_uid", "router_id", "backend", "healthy", "status")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    instance_uid: str
    router_id: str
    backend: str
    healthy: bool
    status: _registry_pb2.WorkerStatus
    def __init__(self, worker_id: _Optional[str] = ..., instance_uid: _Optional[str] = ..., router_id: _Optional[str] = ..., backend: _Optional[str] = ..., healthy: _Optional[bool] = ..., status: _Optional[_Union[_registry_pb2.WorkerStatus, _Mapping]] = ...) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "state", "worker_count", "gpu_types", "total_queue_depth", "workers", "bundles", "profiles")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WORKER_COUNT_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    worker_count: int
    gpu_types: _containers.RepeatedScalarFieldContainer[str]
    total_queue_depth: int
    workers: _containers.RepeatedScalarFieldContainer[str]
    bundles: _containers.RepeatedScalarFieldContainer[str]
    profiles: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., worker_count: _Optional[int] = ..., gpu_types: _Optional[_Iterable[str]] = ..., total_queue_depth: _Optional[int] = ..., workers: _Optional[_Iterable[str]] = ..., bundles: _Optional[_Iterable[str]] = ..., profiles: _Optional[_Iterable[str]] = ...) -> None: ...

class ClusterHealth(_message.Message):
    __slots__ = ("status", "timestamp", "worker_count", "gpu_count", "models_loaded", "configured_gpu_types", "live_gpu_types", "total_qps", "workers", "models", "router_id", "config_epoch", "store_connected", "config_bootstrap_degraded", "config_deltas", "pool_events")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    WORKER_COUNT_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODELS_LOADED_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_GPU_TYPES_FIELD_NUMBER: _ClassVar[int]
    LIVE_GPU_TYPES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_QPS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_EPOCH_FIELD_NUMBER: _ClassVar[int]
    STORE_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_BOOTSTRAP_DEGRADED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DELTAS_FIELD_NUMBER: _ClassVar[int]
    POOL_EVENTS_FIELD_NUMBER: _ClassVar[int]
    status: str
    timestamp: _timestamp_pb2.Timestamp
    worker_count: int
    gpu_count: int
    models_loaded: _containers.RepeatedScalarFieldContainer[str]
    configured_gpu_types: _containers.RepeatedScalarFieldContainer[str]
    live_gpu_types: _containers.RepeatedScalarFieldContainer[str]
    total_qps: float
    workers: _containers.RepeatedCompositeFieldContainer[WorkerSummary]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    router_id: str
    config_epoch: int
    store_connected: bool
    config_bootstrap_degraded: bool
    config_deltas: _containers.RepeatedCompositeFieldContainer[EventCount]
    pool_events: _containers.RepeatedCompositeFieldContainer[EventCount]
    def __init__(self, status: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., worker_count: _Optional[int] = ..., gpu_count: _Optional[int] = ..., models_loaded: _Optional[_Iterable[str]] = ..., configured_gpu_types: _Optional[_Iterable[str]] = ..., live_gpu_types: _Optional[_Iterable[str]] = ..., total_qps: _Optional[float] = ..., workers: _Optional[_Iterable[_Union[WorkerSummary, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ..., router_id: _Optional[str] = ..., config_epoch: _Optional[int] = ..., store_connected: _Optional[bool] = ..., config_bootstrap_degraded: _Optional[bool] = ..., config_deltas: _Optional[_Iterable[_Union[EventCount, _Mapping]]] = ..., pool_events: _Optional[_Iterable[_Union[EventCount, _Mapping]]] = ...) -> None: ...

class EventCount(_message.Message):
    __slots__ = ("kind", "result", "count")
    KIND_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    result: str
    count: int
    def __init__(self, kind: _Optional[str] = ..., result: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelSummary
    def __init__(self, model: _Optional[_Union[ModelSummary, _Mapping]] = ...) -> None: ...

class WatchStatusRequest(_message.Message):
    __slots__ = ("interval_ms",)
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    def __init__(self, interval_ms: _Optional[int] = ...) -> None: ...

class WatchStatusResponse(_message.Message):
    __slots__ = ("health",)
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    health: ClusterHealth
    def __init__(self, health: _Optional[_Union[ClusterHealth, _Mapping]] = ...) -> None: ...

class PendingDemand(_message.Message):
    __slots__ = ("machine_profile", "bundle", "pool", "requests", "last_seen")
    MACHINE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    machine_profile: str
    bundle: str
    pool: str
    requests: int
    last_seen: _timestamp_pb2.Timestamp
    def __init__(self, machine_profile: _Optional[str] = ..., bundle: _Optional[str] = ..., pool: _Optional[str] = ..., requests: _Optional[int] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetPendingDemandRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPendingDemandResponse(_message.Message):
    __slots__ = ("demand",)
    DEMAND_FIELD_NUMBER: _ClassVar[int]
    demand: _containers.RepeatedCompositeFieldContainer[PendingDemand]
    def __init__(self, demand: _Optional[_Iterable[_Union[PendingDemand, _Mapping]]] = ...) -> None: ...

class DrainWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "grace_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    grace_ms: int
    def __init__(self, worker_id: _Optional[str] = ..., grace_ms: _Optional[int] = ...) -> None: ...

class DrainWorkerResponse(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: _Optional[bool] = ...) -> None: ...
