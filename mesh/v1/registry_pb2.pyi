from mesh.v1 import common_pb2 as _common_pb2
from mesh.v1 import inference_pb2 as _inference_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_AVAILABLE: _ClassVar[ModelState]
    MODEL_STATE_LOADING: _ClassVar[ModelState]
    MODEL_STATE_LOADED: _ClassVar[ModelState]
    MODEL_STATE_UNLOADING: _ClassVar[ModelState]
    MODEL_STATE_FAILED: _ClassVar[ModelState]
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_AVAILABLE: ModelState
MODEL_STATE_LOADING: ModelState
MODEL_STATE_LOADED: ModelState
MODEL_STATE_UNLOADING: ModelState
MODEL_STATE_FAILED: ModelState

class ModelStatus(_message.Message):
    __slots__ = ("name", "state", "queue_depth", "queue_pending_items", "memory_bytes", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_PENDING_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: ModelState
    queue_depth: int
    queue_pending_items: int
    memory_bytes: int
    error: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., queue_depth: _Optional[int] = ..., queue_pending_items: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class GpuStatus(_message.Message):
    __slots__ = ("device", "name", "gpu_type", "utilization_pct", "memory_used_bytes", "memory_total_bytes")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PCT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    device: str
    name: str
    gpu_type: str
    utilization_pct: float
    memory_used_bytes: int
    memory_total_bytes: int
    def __init__(self, device: _Optional[str] = ..., name: _Optional[str] = ..., gpu_type: _Optional[str] = ..., utilization_pct: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ...) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("ready", "bundle", "machine_profile", "pool", "gpu_count", "max_batch_requests", "bundle_config_hash", "saturated", "draining", "gpus", "models", "queue_capacity", "seq")
    READY_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    MACHINE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    SATURATED_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    bundle: str
    machine_profile: str
    pool: str
    gpu_count: int
    max_batch_requests: int
    bundle_config_hash: str
    saturated: bool
    draining: bool
    gpus: _containers.RepeatedCompositeFieldContainer[GpuStatus]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    queue_capacity: int
    seq: int
    def __init__(self, ready: _Optional[bool] = ..., bundle: _Optional[str] = ..., machine_profile: _Optional[str] = ..., pool: _Optional[str] = ..., gpu_count: _Optional[int] = ..., max_batch_requests: _Optional[int] = ..., bundle_config_hash: _Optional[str] = ..., saturated: _Optional[bool] = ..., draining: _Optional[bool] = ..., gpus: _Optional[_Iterable[_Union[GpuStatus, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ..., queue_capacity: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("worker_id", "instance_uid", "agent_version", "backend", "status")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    instance_uid: str
    agent_version: str
    backend: str
    status: WorkerStatus
    def __init__(self, worker_id: _Optional[str] = ..., instance_uid: _Optional[str] = ..., agent_version: _Optional[str] = ..., backend: _Optional[str] = ..., status: _Optional[_Union[WorkerStatus, _Mapping]] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "encode", "score", "extract", "error", "queue_ms", "inference_ms")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ENCODE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    EXTRACT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    encode: _inference_pb2.EncodeResponse
    score: _inference_pb2.ScoreResponse
    extract: _inference_pb2.ExtractResponse
    error: _common_pb2.ErrorDetail
    queue_ms: float
    inference_ms: float
    def __init__(self, task_id: _Optional[str] = ..., encode: _Optional[_Union[_inference_pb2.EncodeResponse, _Mapping]] = ..., score: _Optional[_Union[_inference_pb2.ScoreResponse, _Mapping]] = ..., extract: _Optional[_Union[_inference_pb2.ExtractResponse, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ..., queue_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ...) -> None: ...

class ConfigAck(_message.Message):
    __slots__ = ("epoch", "bundle_config_hash")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    bundle_config_hash: str
    def __init__(self, epoch: _Optional[int] = ..., bundle_config_hash: _Optional[str] = ...) -> None: ...

class DrainNotice(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class ResultBatch(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TaskResult]
    def __init__(self, results: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ...) -> None: ...

class WorkerMessage(_message.Message):
    __slots__ = ("hello", "status", "result", "config_ack", "drain_notice", "result_batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_ACK_FIELD_NUMBER: _ClassVar[int]
    DRAIN_NOTICE_FIELD_NUMBER: _ClassVar[int]
    RESULT_BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    status: WorkerStatus
    result: TaskResult
    config_ack: ConfigAck
    drain_notice: DrainNotice
    result_batch: ResultBatch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., status: _Optional[_Union[WorkerStatus, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., config_ack: _Optional[_Union[ConfigAck, _Mapping]] = ..., drain_notice: _Optional[_Union[DrainNotice, _Mapping]] = ..., result_batch: _Optional[_Union[ResultBatch, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("router_id", "config_epoch", "status_interval_ms", "silence_timeout_ms")
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_EPOCH_FIELD_NUMBER: _ClassVar[int]
    STATUS_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    SILENCE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    router_id: str
    config_epoch: int
    status_interval_ms: int
    silence_timeout_ms: int
    def __init__(self, router_id: _Optional[str] = ..., config_epoch: _Optional[int] = ..., status_interval_ms: _Optional[int] = ..., silence_timeout_ms: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "model_id", "profile", "budget_ms", "encode", "score", "extract")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    EXTRACT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    model_id: str
    profile: str
    budget_ms: int
    encode: _inference_pb2.EncodeRequest
    score: _inference_pb2.ScoreRequest
    extract: _inference_pb2.ExtractRequest
    def __init__(self, task_id: _Optional[str] = ..., model_id: _Optional[str] = ..., profile: _Optional[str] = ..., budget_ms: _Optional[int] = ..., encode: _Optional[_Union[_inference_pb2.EncodeRequest, _Mapping]] = ..., score: _Optional[_Union[_inference_pb2.ScoreRequest, _Mapping]] = ..., extract: _Optional[_Union[_inference_pb2.ExtractRequest, _Mapping]] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class ModelConfigDocument(_message.Message):
    __slots__ = ("model_id", "yaml")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    yaml: str
    def __init__(self, model_id: _Optional[str] = ..., yaml: _Optional[str] = ...) -> None: ...

class ConfigUpdate(_message.Message):
    __slots__ = ("epoch", "models", "expected_bundle_config_hash")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_BUNDLE_CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    models: _containers.RepeatedCompositeFieldContainer[ModelConfigDocument]
    expected_bundle_config_hash: str
    def __init__(self, epoch: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelConfigDocument, _Mapping]]] = ..., expected_bundle_config_hash: _Optional[str] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason", "grace_ms")
    REASON_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    reason: str
    grace_ms: int
    def __init__(self, reason: _Optional[str] = ..., grace_ms: _Optional[int] = ...) -> None: ...

class Fence(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class TaskBatch(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ...) -> None: ...

class RouterMessage(_message.Message):
    __slots__ = ("welcome", "task", "cancel", "config_update", "drain", "fence", "task_batch")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    CONFIG_UPDATE_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    TASK_BATCH_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    task: Task
    cancel: Cancel
    config_update: ConfigUpdate
    drain: Drain
    fence: Fence
    task_batch: TaskBatch
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., task: _Optional[_Union[Task, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., config_update: _Optional[_Union[ConfigUpdate, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., fence: _Optional[_Union[Fence, _Mapping]] = ..., task_batch: _Optional[_Union[TaskBatch, _Mapping]] = ...) -> None: ...
