"""Reading inference requests and building responses, shared by the backends.

Backends are text-only today: an item without text is the caller's mistake
for that request alone (INVALID_INPUT naming the item), never the batch's.
"""

from __future__ import annotations

from collections.abc import Sequence

from mesh.errors import ErrorCode, MeshError
from mesh.v1 import common_pb2, inference_pb2
from worker_agent.backends.dense_output import check_dense_dtype

DENSE = "dense"


def item_texts(items: Sequence[common_pb2.Item], field: str = "items") -> list[str]:
    """The text of every item; raises INVALID_INPUT naming the first item without text."""
    texts = []
    for index, item in enumerate(items):
        if not item.HasField("text"):
            raise MeshError(
                ErrorCode.INVALID_INPUT,
                f"{field}[{index}] has no text; this worker reads text items only",
                field=f"{field}[{index}].text",
            )
        texts.append(item.text)
    return texts


def dense_encode_problem(request: inference_pb2.EncodeRequest) -> MeshError | None:
    """Why a dense-only model cannot answer this encode request, or None."""
    for output_type in request.output_types:
        if output_type != DENSE:
            return MeshError(
                ErrorCode.UNSUPPORTED_OPERATION,
                f"output type {output_type!r} is not produced by this model (dense only)",
                field="output_types",
            )
    return check_dense_dtype(request.output_dtype)


def item_id(item: common_pb2.Item, index: int) -> str:
    """The caller's item id, or `item-{index}` as the SIE API defaults it."""
    return item.id or f"item-{index}"


def ranked_scores(items: Sequence[common_pb2.Item], scores: Sequence[float]) -> list[inference_pb2.ItemScore]:
    """Item scores sorted best first, rank 0 the best; ties keep input order."""
    order = sorted(range(len(scores)), key=lambda index: -scores[index])
    return [
        inference_pb2.ItemScore(item_id=item_id(items[index], index), score=float(scores[index]), rank=rank)
        for rank, index in enumerate(order)
    ]
