"""mesh.v1 reply protos -> the SIE reply shapes, for JSON or msgpack.

Vectors arrive as `Tensor {dtype, shape, data}`. A msgpack reply carries them
as msgpack-numpy maps built straight from the tensor's bytes (no numpy on
that path): `{b"nd": True, b"type": "<f4", b"kind": b"", b"shape": [...],
b"data": ...}`, bytes keys and all, which is the only array form the SDK
decodes. A JSON reply carries plain (nested) lists.

A reply that breaks the contract the SDK checks (one result per item, data
length matching shape and dtype) is the worker's fault and answers
WORKER_FAILED rather than reaching the client mangled.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mesh.errors import ErrorCode, MeshError
from mesh.v1 import common_pb2, inference_pb2


class _DtypeWire:
    __slots__ = ("bits_per_element", "itemsize", "name", "numpy_type")

    def __init__(self, name: str, numpy_type: str, itemsize: int, bits_per_element: int = 1) -> None:
        self.name = name
        """The SIE dtype name in replies."""
        self.numpy_type = numpy_type
        """numpy's dtype.str, the msgpack-numpy b"type"."""
        self.itemsize = itemsize
        self.bits_per_element = bits_per_element
        """Dimensions one element stands for (8 for packed bits)."""


_DTYPES: dict[int, _DtypeWire] = {
    common_pb2.DTYPE_UNSPECIFIED: _DtypeWire("float32", "<f4", 4),
    common_pb2.DTYPE_FLOAT32: _DtypeWire("float32", "<f4", 4),
    common_pb2.DTYPE_FLOAT16: _DtypeWire("float16", "<f2", 2),
    common_pb2.DTYPE_INT8: _DtypeWire("int8", "|i1", 1),
    common_pb2.DTYPE_UINT8: _DtypeWire("uint8", "|u1", 1),
    common_pb2.DTYPE_BINARY: _DtypeWire("binary", "|u1", 1, 8),
    common_pb2.DTYPE_INT32: _DtypeWire("int32", "<i4", 4),
    common_pb2.DTYPE_INT64: _DtypeWire("int64", "<i8", 8),
}
# numpy (and so the SDK) has no bfloat16; widen it to float32, which is exact.
_BFLOAT16 = common_pb2.DTYPE_BFLOAT16
_FLOAT32 = _DTYPES[common_pb2.DTYPE_FLOAT32]


def _bad_tensor(what: str) -> MeshError:
    return MeshError(ErrorCode.WORKER_FAILED, f"worker sent a malformed tensor: {what}")


def _tensor(tensor: common_pb2.Tensor, msgpack: bool) -> tuple[Any, _DtypeWire, list[int]]:
    """(values for the reply, wire dtype, shape)."""
    shape = list(tensor.shape)
    data = tensor.data
    if tensor.dtype == _BFLOAT16:
        if len(data) % 2:
            raise _bad_tensor("odd byte count for bfloat16")
        # bfloat16 is the top half of a float32: shift the bits into place.
        data = (np.frombuffer(data, dtype="<u2").astype("<u4") << 16).tobytes()
        wire = _FLOAT32
    else:
        wire = _DTYPES.get(tensor.dtype)
        if wire is None:
            raise _bad_tensor(f"unknown dtype {tensor.dtype}")
    if any(dim < 0 for dim in shape) or math.prod(shape) * wire.itemsize != len(data):
        raise _bad_tensor(f"{len(data)} bytes do not fill shape {shape} of {wire.name}")
    if msgpack:
        values: Any = {b"nd": True, b"type": wire.numpy_type, b"kind": b"", b"shape": shape, b"data": data}
    else:
        values = np.frombuffer(data, dtype=wire.numpy_type).reshape(shape).tolist()
    return values, wire, shape


def _dense(tensor: common_pb2.Tensor, msgpack: bool) -> dict[str, Any]:
    values, wire, shape = _tensor(tensor, msgpack)
    dims = shape[-1] * wire.bits_per_element if shape else 0
    return {"dims": dims, "dtype": wire.name, "values": values}


def _sparse(sparse: inference_pb2.SparseVector, msgpack: bool) -> dict[str, Any]:
    indices, _, _ = _tensor(sparse.indices, msgpack)
    values, wire, _ = _tensor(sparse.values, msgpack)
    return {
        "dims": sparse.dims if sparse.HasField("dims") else None,
        "dtype": wire.name,
        "indices": indices,
        "values": values,
    }


def _multivector(tensor: common_pb2.Tensor, msgpack: bool) -> dict[str, Any]:
    values, wire, shape = _tensor(tensor, msgpack)
    if len(shape) != 2:
        raise _bad_tensor(f"multivector shape {shape} is not [num_tokens, token_dims]")
    return {
        "token_dims": shape[1] * wire.bits_per_element,
        "num_tokens": shape[0],
        "dtype": wire.name,
        "values": values,
    }


def _timing(timing: common_pb2.Timing) -> dict[str, float]:
    return {"total_ms": timing.total_ms, "queue_ms": timing.queue_ms, "inference_ms": timing.inference_ms}


def _check_count(received: int, expected: int, what: str) -> None:
    if received != expected:
        # The SDK raises on a count mismatch; a silent drop would misalign
        # every result after it, so the whole reply is refused instead.
        raise MeshError(
            ErrorCode.WORKER_FAILED, f"worker returned {received} {what} for {expected} input items"
        )


def encode_reply(
    response: inference_pb2.EncodeResponse, model: str, expected_items: int, msgpack: bool
) -> dict[str, Any]:
    _check_count(len(response.items), expected_items, "embeddings")
    items = []
    for item in response.items:
        out: dict[str, Any] = {"id": item.id} if item.id else {}
        if item.HasField("dense"):
            out["dense"] = _dense(item.dense, msgpack)
        if item.HasField("sparse"):
            out["sparse"] = _sparse(item.sparse, msgpack)
        if item.HasField("multivector"):
            out["multivector"] = _multivector(item.multivector, msgpack)
        items.append(out)
    reply: dict[str, Any] = {"model": response.model or model, "items": items}
    if response.HasField("timing"):
        reply["timing"] = _timing(response.timing)
    return reply


def score_reply(
    response: inference_pb2.ScoreResponse, model: str, expected_items: int, msgpack: bool = False
) -> dict[str, Any]:
    """`msgpack` is unused: scores carry no arrays. It keeps the three replies one shape."""
    _check_count(len(response.scores), expected_items, "scores")
    # Sorted here too, stably, so the wire promise (best first, rank = position)
    # holds whatever order the worker used.
    ordered = sorted(response.scores, key=lambda entry: -entry.score)
    reply: dict[str, Any] = {
        "model": response.model or model,
        "query_id": response.query_id or None,
        "scores": [
            {"item_id": entry.item_id, "score": entry.score, "rank": rank}
            for rank, entry in enumerate(ordered)
        ],
    }
    if response.HasField("timing"):
        reply["timing"] = _timing(response.timing)
    return reply


def extract_reply(
    response: inference_pb2.ExtractResponse, model: str, expected_items: int, msgpack: bool = False
) -> dict[str, Any]:
    """`msgpack` is unused: extractions carry no arrays. It keeps the three replies one shape."""
    _check_count(len(response.items), expected_items, "extraction results")
    items = []
    for item in response.items:
        out: dict[str, Any] = {"id": item.id} if item.id else {}
        out["entities"] = [
            {"text": e.text, "label": e.label, "score": e.score, "start": e.start, "end": e.end}
            for e in item.entities
        ]
        out["relations"] = [
            {"head": r.head, "tail": r.tail, "relation": r.relation, "score": r.score} for r in item.relations
        ]
        out["classifications"] = [{"label": c.label, "score": c.score} for c in item.classifications]
        out["objects"] = [{"label": o.label, "score": o.score, "bbox": list(o.bbox)} for o in item.objects]
        items.append(out)
    reply: dict[str, Any] = {"model": response.model or model, "items": items}
    if response.HasField("timing"):
        reply["timing"] = _timing(response.timing)
    return reply
