"""Dense vectors to wire tensors, in every output dtype that makes sense for them.

Quantisation is fixed-range and per value, never calibrated on the batch: a
vector's bytes must not depend on which other requests happened to share its
batch. The ranges assume the model's usual output, unit-norm vectors whose
components lie in [-1, 1]; values outside are clipped.

| dtype    | storage                     | mapping                                   |
|----------|-----------------------------|-------------------------------------------|
| float32  | `<f4`, shape [dims]         | as computed                               |
| float16  | `<f2`, shape [dims]         | IEEE half, round to nearest               |
| bfloat16 | `<u2` bits, shape [dims]    | top 16 bits of float32, round to nearest even |
| int8     | `i1`, shape [dims]          | round(v * 127), clipped to [-127, 127]    |
| uint8    | `u1`, shape [dims]          | round((v + 1) * 127.5), clipped to [0, 255] |
| binary   | `u1`, shape [ceil(dims/8)]  | bit = v > 0, packed MSB first (numpy `packbits`) |

int8 keeps zero at zero and a symmetric range, so dot products of quantised
vectors rank like the float ones; binary is sign quantisation for Hamming
search (the shape is the packed storage, eight dimensions to a byte).
int32 / int64 are index types and are refused for dense output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mesh.errors import ErrorCode, MeshError
from mesh.v1 import common_pb2, inference_pb2

DENSE_DTYPES = frozenset(
    {
        common_pb2.DTYPE_UNSPECIFIED,
        common_pb2.DTYPE_FLOAT32,
        common_pb2.DTYPE_FLOAT16,
        common_pb2.DTYPE_BFLOAT16,
        common_pb2.DTYPE_INT8,
        common_pb2.DTYPE_UINT8,
        common_pb2.DTYPE_BINARY,
    }
)


def check_dense_dtype(dtype: int) -> MeshError | None:
    """INVALID_INPUT for an output dtype dense vectors cannot take, else None."""
    if dtype in DENSE_DTYPES:
        return None
    try:
        name = common_pb2.Dtype.Name(dtype)
    except ValueError:
        name = str(dtype)
    return MeshError(
        ErrorCode.INVALID_INPUT,
        f"output dtype {name} is not available for dense vectors "
        "(float32, float16, bfloat16, int8, uint8 or binary)",
        field="output_dtype",
    )


def quantize(matrix: np.ndarray, dtype: int) -> np.ndarray:
    """Rows of float vectors as the storage array of `dtype` (see the module table)."""
    if dtype in (common_pb2.DTYPE_UNSPECIFIED, common_pb2.DTYPE_FLOAT32):
        return np.ascontiguousarray(matrix, dtype="<f4")
    if dtype == common_pb2.DTYPE_FLOAT16:
        return matrix.astype("<f2")
    if dtype == common_pb2.DTYPE_BFLOAT16:
        bits = np.ascontiguousarray(matrix, dtype="<f4").view("<u4").astype(np.uint64)
        # Round to nearest, ties to even, on the 16 bits that are dropped.
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return rounded.astype("<u2")
    if dtype == common_pb2.DTYPE_INT8:
        return np.clip(np.rint(matrix * 127.0), -127, 127).astype("i1")
    if dtype == common_pb2.DTYPE_UINT8:
        return np.clip(np.rint((matrix + 1.0) * 127.5), 0, 255).astype("u1")
    if dtype == common_pb2.DTYPE_BINARY:
        return np.packbits(matrix > 0, axis=-1)
    problem = check_dense_dtype(dtype)
    raise problem if problem else AssertionError(dtype)


def dense_response(
    items: Sequence[common_pb2.Item], matrix: np.ndarray, dtype: int
) -> inference_pb2.EncodeResponse:
    """An EncodeResponse with one little-endian dense Tensor per row of `matrix`
    (float, shape [len(items), dims]) in the storage of `dtype`, each carrying
    its item's id; built in place, so each vector's bytes are copied once."""
    if matrix.ndim != 2 or matrix.shape[0] != len(items):
        raise ValueError(f"expected {len(items)} vectors, got an array of shape {matrix.shape}")
    stored = quantize(matrix, dtype)
    wire_dtype = common_pb2.DTYPE_FLOAT32 if dtype == common_pb2.DTYPE_UNSPECIFIED else dtype
    width = stored.shape[1]
    response = inference_pb2.EncodeResponse()
    entries = response.items
    for item, row in zip(items, stored):
        entry = entries.add()
        if item.id:
            entry.id = item.id
        dense = entry.dense
        dense.dtype = wire_dtype
        dense.shape.append(width)
        dense.data = row.tobytes()
    return response


def tensor_to_array(tensor: common_pb2.Tensor) -> np.ndarray:
    """The storage array a Tensor carries (for readers and tests)."""
    storage = {
        common_pb2.DTYPE_FLOAT32: "<f4",
        common_pb2.DTYPE_FLOAT16: "<f2",
        common_pb2.DTYPE_BFLOAT16: "<u2",
        common_pb2.DTYPE_INT8: "i1",
        common_pb2.DTYPE_UINT8: "u1",
        common_pb2.DTYPE_BINARY: "u1",
        common_pb2.DTYPE_INT32: "<i4",
        common_pb2.DTYPE_INT64: "<i8",
    }[tensor.dtype]
    return np.frombuffer(tensor.data, dtype=storage).reshape(tuple(tensor.shape))
