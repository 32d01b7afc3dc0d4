import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PoolState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOL_STATE_UNSPECIFIED: _ClassVar[PoolState]
    POOL_STATE_PENDING: _ClassVar[PoolState]
    POOL_STATE_ACTIVE: _ClassVar[PoolState]
    POOL_STATE_EXPIRED: _ClassVar[PoolState]
POOL_STATE_UNSPECIFIED: PoolState
POOL_STATE_PENDING: PoolState
POOL_STATE_ACTIVE: PoolState
POOL_STATE_EXPIRED: PoolState

class PoolSpec(_message.Message):
    __slots__ = ("name", "bundle", "gpus", "gpu_caps", "ttl_seconds", "minimum_worker_count")
    class GpusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class GpuCapsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_CAPS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_WORKER_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    bundle: str
    gpus: _containers.ScalarMap[str, int]
    gpu_caps: _containers.ScalarMap[str, int]
    ttl_seconds: int
    minimum_worker_count: int
    def __init__(self, name: _Optional[str] = ..., bundle: _Optional[str] = ..., gpus: _Optional[_Mapping[str, int]] = ..., gpu_caps: _Optional[_Mapping[str, int]] = ..., ttl_seconds: _Optional[int] = ..., minimum_worker_count: _Optional[int] = ...) -> None: ...

class AssignedWorker(_message.Message):
    __slots__ = ("name", "url", "gpu", "bundle")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    gpu: str
    bundle: str
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., gpu: _Optional[str] = ..., bundle: _Optional[str] = ...) -> None: ...

class Pool(_message.Message):
    __slots__ = ("spec", "state", "assigned_workers", "created_at", "last_renewed")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_RENEWED_FIELD_NUMBER: _ClassVar[int]
    spec: PoolSpec
    state: PoolState
    assigned_workers: _containers.RepeatedCompositeFieldContainer[AssignedWorker]
    created_at: _timestamp_pb2.Timestamp
    last_renewed: _timestamp_pb2.Timestamp
    def __init__(self, spec: _Optional[_Union[PoolSpec, _Mapping]] = ..., state: _Optional[_Union[PoolState, str]] = ..., assigned_workers: _Optional[_Iterable[_Union[AssignedWorker, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_renewed: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreatePoolRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: PoolSpec
    def __init__(self, spec: _Optional[_Union[PoolSpec, _Mapping]] = ...) -> None: ...

class CreatePoolResponse(_message.Message):
    __slots__ = ("pool", "created")
    POOL_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    created: bool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetPoolRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPoolResponse(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ...) -> None: ...

class RenewPoolRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RenewPoolResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class DeletePoolRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePoolResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class ListPoolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoolsResponse(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[Pool]
    def __init__(self, pools: _Optional[_Iterable[_Union[Pool, _Mapping]]] = ...) -> None: ...
