"""Decoded request bodies -> mesh.v1 request protos, validating as they go.

Everything a client sends is checked here, once, and every violation is an
INVALID_INPUT naming the field (`items[3].images[0].data`), so nothing a
client writes can reach the mesh malformed or surface as a 5xx. The shapes
are those of the SIE API (see sie-wire.md): encode and extract wrap their
knobs in `params`, score does not.

Hand-written rather than a schema library on purpose: this runs on every
request and must cost microseconds, not a model instantiation.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from mesh.errors import ErrorCode, MeshError
from mesh.v1 import common_pb2, inference_pb2

OUTPUT_TYPES = ("dense", "sparse", "multivector")
_OUTPUT_TYPE_SET = frozenset(OUTPUT_TYPES)

# The SDK's OutputDType. "binary" and "ubinary" both travel as packed sign
# bits; mesh.v1 has one packed dtype, so the worker decides the storage.
OUTPUT_DTYPES: dict[str, int] = {
    "float32": common_pb2.DTYPE_FLOAT32,
    "float16": common_pb2.DTYPE_FLOAT16,
    "int8": common_pb2.DTYPE_INT8,
    "uint8": common_pb2.DTYPE_UINT8,
    "binary": common_pb2.DTYPE_BINARY,
    "ubinary": common_pb2.DTYPE_BINARY,
}

_MEDIA_FIELDS = ("audio", "video", "document")
# Deeper than any real option or metadata document, shallow enough that a
# hostile one cannot make validation expensive.
_MAX_DEPTH = 32
# Struct numbers are doubles; larger integers would silently change.
_MAX_EXACT_INT = 2**53


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """Per-request size limits, taken from FacadeConfig."""

    max_items: int
    max_score_items: int
    max_labels: int


def _invalid(field: str, message: str) -> MeshError:
    return MeshError(ErrorCode.INVALID_INPUT, f"{field}: {message}", field=field)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _object(value: object, field: str) -> Mapping[Any, Any]:
    if not isinstance(value, dict):
        raise _invalid(field, f"expected an object, got {_type_name(value)}")
    return value


def _optional_object(value: object, field: str) -> Mapping[Any, Any]:
    if value is None:
        return {}
    return _object(value, field)


def _optional_str(value: object, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _invalid(field, f"expected a string, got {_type_name(value)}")


def _optional_bool(value: object, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise _invalid(field, f"expected a boolean, got {_type_name(value)}")


def _list(value: object, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid(field, f"expected an array, got {_type_name(value)}")
    return value


def _string_list(value: object, field: str, limit: int) -> list[str]:
    values = _list(value, field)
    if len(values) > limit:
        raise _invalid(field, f"at most {limit} entries are allowed, got {len(values)}")
    for index, entry in enumerate(values):
        if not isinstance(entry, str):
            raise _invalid(f"{field}[{index}]", f"expected a string, got {_type_name(entry)}")
    return values


def _check_json_value(value: object, field: str, depth: int) -> None:
    """Only what a google.protobuf.Struct holds faithfully: JSON, finite, exact."""
    if value is None or isinstance(value, (str, bool)):
        return
    if isinstance(value, int):
        if abs(value) > _MAX_EXACT_INT:
            raise _invalid(field, "integer is too large to carry exactly")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _invalid(field, "NaN and Infinity are not allowed")
        return
    if depth >= _MAX_DEPTH:
        raise _invalid(field, f"nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, entry in value.items():
            if not isinstance(key, str):
                raise _invalid(field, "object keys must be strings")
            _check_json_value(entry, f"{field}.{key}", depth + 1)
        return
    if isinstance(value, list):
        for index, entry in enumerate(value):
            _check_json_value(entry, f"{field}[{index}]", depth + 1)
        return
    raise _invalid(field, f"expected a JSON value, got {_type_name(value)}")


def _fill_struct(target: struct_pb2.Struct, value: Mapping[Any, Any], field: str) -> None:
    _check_json_value(value, field, 0)
    target.update(value)


def _media_bytes(value: object, field: str) -> bytes:
    # msgpack carries raw bytes; JSON can only carry base64 text. Accept base64
    # in msgpack too: a hand-written msgpack client may well send text.
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(field, "expected base64-encoded bytes") from None
    raise _invalid(field, f"expected bytes or a base64 string, got {_type_name(value)}")


def _fill_media(target: common_pb2.Media, value: object, field: str) -> None:
    if isinstance(value, (bytes, str)):
        target.data = _media_bytes(value, field)
        return
    media = _object(value, field)
    if "data" not in media:
        raise _invalid(f"{field}.data", "is required")
    target.data = _media_bytes(media["data"], f"{field}.data")
    media_format = _optional_str(media.get("format"), f"{field}.format")
    if media_format:
        target.format = media_format


def _fill_item(target: common_pb2.Item, value: object, field: str) -> None:
    item = _object(value, field)
    has_content = False
    item_id = item.get("id")
    if item_id is not None:
        if not isinstance(item_id, str):
            raise _invalid(f"{field}.id", f"expected a string, got {_type_name(item_id)}")
        target.id = item_id
    text = item.get("text")
    if text is not None:
        if not isinstance(text, str):
            raise _invalid(f"{field}.text", f"expected a string, got {_type_name(text)}")
        target.text = text
        has_content = True
    # Text-only items (nearly all of them) skip the media and metadata checks.
    if len(item) > (item_id is not None) + (text is not None):
        has_content = _fill_item_extras(target, item, field) or has_content
    if not has_content:
        raise _invalid(field, "needs text, images, audio, video or document")


def _fill_item_extras(target: common_pb2.Item, item: Mapping[Any, Any], field: str) -> bool:
    """The rarer item fields, off the text-only fast path. True when media was given."""
    has_media = False
    images = item.get("images")
    if images is not None:
        for index, image in enumerate(_list(images, f"{field}.images")):
            _fill_media(target.images.add(), image, f"{field}.images[{index}]")
        has_media = bool(images)
    for name in _MEDIA_FIELDS:
        media = item.get(name)
        if media is not None:
            _fill_media(getattr(target, name), media, f"{field}.{name}")
            has_media = True
    metadata = item.get("metadata")
    if metadata is not None:
        _fill_struct(target.metadata, _object(metadata, f"{field}.metadata"), f"{field}.metadata")
    if item.get("multivector") is not None:
        # Pre-encoded multivectors are for client-side MaxSim; no mesh worker
        # takes one as input, and dropping it silently would change the answer.
        raise _invalid(f"{field}.multivector", "pre-encoded multivectors are not accepted as input")
    return has_media


def _fill_items(target: Any, value: object, field: str, limit: int) -> int:
    items = _list(value, field)
    if not items:
        raise _invalid(field, "at least one item is required")
    if len(items) > limit:
        raise _invalid(field, f"at most {limit} items are allowed, got {len(items)}")
    for index, item in enumerate(items):
        _fill_item(target.add(), item, f"{field}[{index}]")
    return len(items)


def _split_options(
    value: object, field: str, known: tuple[str, ...]
) -> tuple[Mapping[Any, Any], dict[str, Any]]:
    """(known options, the rest); the rest passes to the backend untouched."""
    options = _optional_object(value, field)
    extra = {key: entry for key, entry in options.items() if key not in known}
    return options, extra


def _body(value: object) -> Mapping[Any, Any]:
    return _object(value, "body")


_ENCODE_OPTIONS = ("is_query", "normalize", "lora", "profile")
_LORA_PROFILE = ("lora", "profile")


def _build_encode(model: str, value: object, limits: BodyLimits) -> inference_pb2.EncodeRequest:
    body = _body(value)
    request = inference_pb2.EncodeRequest(model=model)
    _fill_items(request.items, body.get("items"), "items", limits.max_items)
    params = _optional_object(body.get("params"), "params")
    if not params:
        return request
    output_types = params.get("output_types")
    if output_types is not None:
        names = _string_list(output_types, "params.output_types", len(OUTPUT_TYPES) * 4)
        if not names:
            raise _invalid("params.output_types", "name at least one output type")
        for index, name in enumerate(names):
            if name not in _OUTPUT_TYPE_SET:
                raise _invalid(
                    f"params.output_types[{index}]",
                    f"unknown output type {name!r}; expected one of {', '.join(OUTPUT_TYPES)}",
                )
            if name not in request.output_types:
                request.output_types.append(name)
    instruction = _optional_str(params.get("instruction"), "params.instruction")
    if instruction is not None:
        request.instruction = instruction
    output_dtype = params.get("output_dtype")
    if output_dtype is not None:
        if not isinstance(output_dtype, str) or output_dtype not in OUTPUT_DTYPES:
            raise _invalid(
                "params.output_dtype",
                f"unknown output dtype {output_dtype!r}; expected one of {', '.join(OUTPUT_DTYPES)}",
            )
        request.output_dtype = OUTPUT_DTYPES[output_dtype]
    options, extra = _split_options(params.get("options"), "params.options", _ENCODE_OPTIONS)
    if options:
        is_query = _optional_bool(options.get("is_query"), "params.options.is_query")
        if is_query is not None:
            request.options.is_query = is_query
        normalize = _optional_bool(options.get("normalize"), "params.options.normalize")
        if normalize is not None:
            request.options.normalize = normalize
        lora = _optional_str(options.get("lora"), "params.options.lora")
        if lora:
            request.options.lora = lora
        profile = _optional_str(options.get("profile"), "params.options.profile")
        if profile:
            request.options.profile = profile
        if extra:
            _fill_struct(request.options.extra, extra, "params.options")
    return request


def _build_score(model: str, value: object, limits: BodyLimits) -> inference_pb2.ScoreRequest:
    body = _body(value)
    request = inference_pb2.ScoreRequest(model=model)
    if body.get("query") is None:
        raise _invalid("query", "is required")
    _fill_item(request.query, body["query"], "query")
    _fill_items(request.items, body.get("items"), "items", limits.max_score_items)
    # Scores name their items; the SIE default for an item without an id is
    # its position, and only the request still knows positions.
    for index, item in enumerate(request.items):
        if not item.id:
            item.id = f"item-{index}"
    instruction = _optional_str(body.get("instruction"), "instruction")
    if instruction is not None:
        request.instruction = instruction
    options, extra = _split_options(body.get("options"), "options", _LORA_PROFILE)
    if options:
        _fill_lora_profile(request.options, options, "options")
        if extra:
            _fill_struct(request.options.extra, extra, "options")
    return request


def _build_extract(model: str, value: object, limits: BodyLimits) -> inference_pb2.ExtractRequest:
    body = _body(value)
    request = inference_pb2.ExtractRequest(model=model)
    _fill_items(request.items, body.get("items"), "items", limits.max_items)
    params = _optional_object(body.get("params"), "params")
    if not params:
        return request
    labels = params.get("labels")
    if labels is not None:
        request.labels.extend(_string_list(labels, "params.labels", limits.max_labels))
    output_schema = params.get("output_schema")
    if output_schema is not None:
        _fill_struct(
            request.output_schema, _object(output_schema, "params.output_schema"), "params.output_schema"
        )
    options, extra = _split_options(params.get("options"), "params.options", _LORA_PROFILE)
    instruction = _optional_str(params.get("instruction"), "params.instruction")
    if instruction is not None:
        # ExtractRequest has no instruction field; the backend reads it from
        # the pass-through options, where the SIE adapters look for it too.
        extra["instruction"] = instruction
    _fill_lora_profile(request.options, options, "params.options")
    if extra:
        _fill_struct(request.options.extra, extra, "params.options")
    return request


def _fill_lora_profile(target: Any, options: Mapping[Any, Any], field: str) -> None:
    lora = _optional_str(options.get("lora"), f"{field}.lora")
    if lora:
        target.lora = lora
    profile = _optional_str(options.get("profile"), f"{field}.profile")
    if profile:
        target.profile = profile


class _Utf8Only:
    """JSON's "\\ud800" escapes decode to lone surrogates, which protobuf
    (UTF-8 only) refuses while copying a string in; that is the client's input."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        if kind is UnicodeEncodeError:
            raise _invalid("body", "strings must be valid Unicode; lone surrogates are not") from None


_UTF8_ONLY = _Utf8Only()


def parse_encode(model: str, value: object, limits: BodyLimits) -> inference_pb2.EncodeRequest:
    with _UTF8_ONLY:
        return _build_encode(model, value, limits)


def parse_score(model: str, value: object, limits: BodyLimits) -> inference_pb2.ScoreRequest:
    with _UTF8_ONLY:
        return _build_score(model, value, limits)


def parse_extract(model: str, value: object, limits: BodyLimits) -> inference_pb2.ExtractRequest:
    with _UTF8_ONLY:
        return _build_extract(model, value, limits)
