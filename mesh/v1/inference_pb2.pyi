from google.protobuf import struct_pb2 as _struct_pb2
from mesh.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncodeOptions(_message.Message):
    __slots__ = ("is_query", "normalize", "lora", "profile", "extra")
    IS_QUERY_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    is_query: bool
    normalize: bool
    lora: str
    profile: str
    extra: _struct_pb2.Struct
    def __init__(self, is_query: _Optional[bool] = ..., normalize: _Optional[bool] = ..., lora: _Optional[str] = ..., profile: _Optional[str] = ..., extra: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("model", "items", "output_types", "instruction", "output_dtype", "options", "target")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TYPES_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    model: str
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Item]
    output_types: _containers.RepeatedScalarFieldContainer[str]
    instruction: str
    output_dtype: _common_pb2.Dtype
    options: EncodeOptions
    target: _common_pb2.RoutingTarget
    def __init__(self, model: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_common_pb2.Item, _Mapping]]] = ..., output_types: _Optional[_Iterable[str]] = ..., instruction: _Optional[str] = ..., output_dtype: _Optional[_Union[_common_pb2.Dtype, str]] = ..., options: _Optional[_Union[EncodeOptions, _Mapping]] = ..., target: _Optional[_Union[_common_pb2.RoutingTarget, _Mapping]] = ...) -> None: ...

class SparseVector(_message.Message):
    __slots__ = ("dims", "indices", "values")
    DIMS_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    dims: int
    indices: _common_pb2.Tensor
    values: _common_pb2.Tensor
    def __init__(self, dims: _Optional[int] = ..., indices: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., values: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class EncodedItem(_message.Message):
    __slots__ = ("id", "dense", "sparse", "multivector")
    ID_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    MULTIVECTOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    dense: _common_pb2.Tensor
    sparse: SparseVector
    multivector: _common_pb2.Tensor
    def __init__(self, id: _Optional[str] = ..., dense: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., sparse: _Optional[_Union[SparseVector, _Mapping]] = ..., multivector: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("model", "items", "timing", "worker_id", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    items: _containers.RepeatedCompositeFieldContainer[EncodedItem]
    timing: _common_pb2.Timing
    worker_id: str
    request_id: str
    def __init__(self, model: _Optional[str] = ..., items: _Optional[_Iterable[_Union[EncodedItem, _Mapping]]] = ..., timing: _Optional[_Union[_common_pb2.Timing, _Mapping]] = ..., worker_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ScoreOptions(_message.Message):
    __slots__ = ("lora", "profile", "extra")
    LORA_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    lora: str
    profile: str
    extra: _struct_pb2.Struct
    def __init__(self, lora: _Optional[str] = ..., profile: _Optional[str] = ..., extra: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("model", "query", "items", "instruction", "options", "target")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    model: str
    query: _common_pb2.Item
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Item]
    instruction: str
    options: ScoreOptions
    target: _common_pb2.RoutingTarget
    def __init__(self, model: _Optional[str] = ..., query: _Optional[_Union[_common_pb2.Item, _Mapping]] = ..., items: _Optional[_Iterable[_Union[_common_pb2.Item, _Mapping]]] = ..., instruction: _Optional[str] = ..., options: _Optional[_Union[ScoreOptions, _Mapping]] = ..., target: _Optional[_Union[_common_pb2.RoutingTarget, _Mapping]] = ...) -> None: ...

class ItemScore(_message.Message):
    __slots__ = ("item_id", "score", "rank")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    rank: int
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., rank: _Optional[int] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("model", "query_id", "scores", "timing", "worker_id", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    query_id: str
    scores: _containers.RepeatedCompositeFieldContainer[ItemScore]
    timing: _common_pb2.Timing
    worker_id: str
    request_id: str
    def __init__(self, model: _Optional[str] = ..., query_id: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[ItemScore, _Mapping]]] = ..., timing: _Optional[_Union[_common_pb2.Timing, _Mapping]] = ..., worker_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ExtractOptions(_message.Message):
    __slots__ = ("lora", "profile", "extra")
    LORA_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    lora: str
    profile: str
    extra: _struct_pb2.Struct
    def __init__(self, lora: _Optional[str] = ..., profile: _Optional[str] = ..., extra: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ExtractRequest(_message.Message):
    __slots__ = ("model", "items", "labels", "output_schema", "options", "target")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    model: str
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Item]
    labels: _containers.RepeatedScalarFieldContainer[str]
    output_schema: _struct_pb2.Struct
    options: ExtractOptions
    target: _common_pb2.RoutingTarget
    def __init__(self, model: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_common_pb2.Item, _Mapping]]] = ..., labels: _Optional[_Iterable[str]] = ..., output_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., options: _Optional[_Union[ExtractOptions, _Mapping]] = ..., target: _Optional[_Union[_common_pb2.RoutingTarget, _Mapping]] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("text", "label", "score", "start", "end")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    text: str
    label: str
    score: float
    start: int
    end: int
    def __init__(self, text: _Optional[str] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Relation(_message.Message):
    __slots__ = ("head", "tail", "relation", "score")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    RELATION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    head: str
    tail: str
    relation: str
    score: float
    def __init__(self, head: _Optional[str] = ..., tail: _Optional[str] = ..., relation: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class DetectedObject(_message.Message):
    __slots__ = ("label", "score", "bbox")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BBOX_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    bbox: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., bbox: _Optional[_Iterable[float]] = ...) -> None: ...

class ExtractedItem(_message.Message):
    __slots__ = ("id", "entities", "relations", "classifications", "objects")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    RELATIONS_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    relations: _containers.RepeatedCompositeFieldContainer[Relation]
    classifications: _containers.RepeatedCompositeFieldContainer[Classification]
    objects: _containers.RepeatedCompositeFieldContainer[DetectedObject]
    def __init__(self, id: _Optional[str] = ..., entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ..., relations: _Optional[_Iterable[_Union[Relation, _Mapping]]] = ..., classifications: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., objects: _Optional[_Iterable[_Union[DetectedObject, _Mapping]]] = ...) -> None: ...

class ExtractResponse(_message.Message):
    __slots__ = ("model", "items", "timing", "worker_id", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    items: _containers.RepeatedCompositeFieldContainer[ExtractedItem]
    timing: _common_pb2.Timing
    worker_id: str
    request_id: str
    def __init__(self, model: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ExtractedItem, _Mapping]]] = ..., timing: _Optional[_Union[_common_pb2.Timing, _Mapping]] = ..., worker_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...
