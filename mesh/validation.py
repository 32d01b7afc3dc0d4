"""Limits every inference request must meet, whichever edge it came through.

The HTTP facade checks shapes and types of JSON / msgpack bodies; these are
the semantic limits, checked once here for gRPC callers and the facade alike.
"""

from __future__ import annotations

from mesh.errors import ErrorCode, MeshError

MAX_ITEMS = 1024
"""Items in one encode or extract request."""
MAX_SCORE_ITEMS = 1000
"""Candidate items in one score request."""
MAX_LABELS = 1000
"""Labels in one extract request."""
MAX_TEXT_CHARS = 1_000_000
"""Characters in one item's text."""
MAX_MODEL_CHARS = 512
OUTPUT_TYPES = frozenset({"dense", "sparse", "multivector"})


def _invalid(field: str, message: str) -> MeshError:
    return MeshError(ErrorCode.INVALID_INPUT, message, field=field)


def _check_items(items, field: str, limit: int) -> None:
    if not items:
        raise _invalid(field, f"'{field}' must hold at least one item")
    if len(items) > limit:
        raise _invalid(field, f"'{field}' holds {len(items)} items; at most {limit} are allowed")
    for index, item in enumerate(items):
        if item.HasField("text") and len(item.text) > MAX_TEXT_CHARS:
            raise _invalid(f"{field}[{index}].text", f"text longer than {MAX_TEXT_CHARS} characters")


def _check_model(model: str) -> None:
    if not model or not model.strip():
        raise _invalid("model", "a model is required")
    if len(model) > MAX_MODEL_CHARS:
        raise _invalid("model", f"model path longer than {MAX_MODEL_CHARS} characters")


def validate_request(operation: str, request) -> None:
    """Raise INVALID_INPUT naming the field when `request` breaks a limit."""
    _check_model(request.model)
    if operation == "encode":
        _check_items(request.items, "items", MAX_ITEMS)
        for output_type in request.output_types:
            if output_type not in OUTPUT_TYPES:
                raise _invalid(
                    "params.output_types",
                    f"unknown output type '{output_type}'; expected one of {sorted(OUTPUT_TYPES)}",
                )
    elif operation == "score":
        if not request.HasField("query"):
            raise _invalid("query", "a query item is required")
        _check_items(request.items, "items", MAX_SCORE_ITEMS)
        _check_items([request.query], "query", 1)
    elif operation == "extract":
        _check_items(request.items, "items", MAX_ITEMS)
        if len(request.labels) > MAX_LABELS:
            raise _invalid("params.labels", f"at most {MAX_LABELS} labels are allowed")
    else:
        raise _invalid("operation", f"unknown operation '{operation}'")
