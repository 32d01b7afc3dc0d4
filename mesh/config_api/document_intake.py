"""Admission of a posted model document, before anything parses it for real.

A document comes from whoever holds the admin token, over the network, and is
later parsed by every replica and every worker. So it is refused here, with
INVALID_INPUT and never a traceback, when it is:

- larger than `IntakeLimits.max_document_bytes`;
- a YAML bomb: aliases are cheap to write and expensive to expand
  ("billion laughs": nine aliases of nine aliases of ... is 9**9 nodes), so
  the node count is measured *with aliases expanded*, from the parser's event
  stream, without ever building the expanded value;
- nested deeper than `max_depth` (recursive code downstream would hit
  Python's recursion limit);
- tagged with anything the safe loader would not construct (`!!python/...`);
- not YAML (or not JSON, when the Content-Type says JSON).

A JSON body is re-serialised as YAML, so everything downstream (the store,
the catalog, the workers) sees one format.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import yaml

from mesh.errors import ErrorCode, MeshError

YAML_MEDIA_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
JSON_MEDIA_TYPES = frozenset({"application/json"})

# The C parser when PyYAML was built with libyaml: same events, much faster.
_EVENT_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_MAX_IDEMPOTENCY_KEY_CHARS = 256
# Explicit tags the safe loader can construct (`!!str`, `!!int`, ...); any
# other (`!!python/object`, application tags) is refused up front.
_SAFE_TAGS = frozenset(tag for tag in yaml.SafeLoader.yaml_constructors if tag is not None)


@dataclass(frozen=True)
class IntakeLimits:
    """Bounds on a posted document."""

    max_document_bytes: int = 256 * 1024
    """Largest document accepted, in UTF-8 bytes (a model config is a few KiB)."""
    max_nodes: int = 20_000
    """Most YAML nodes (scalars and collections) with every alias expanded."""
    max_depth: int = 32
    """Deepest nesting of mappings and sequences."""

    def __post_init__(self) -> None:
        for name in ("max_document_bytes", "max_nodes", "max_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


def media_type(content_type: str) -> str:
    """`application/json; charset=utf-8` -> `application/json`."""
    return content_type.partition(";")[0].strip().lower()


def is_supported_media_type(content_type: str) -> bool:
    """YAML, JSON, or no Content-Type at all (read as YAML, which JSON also is)."""
    kind = media_type(content_type)
    return not kind or kind in YAML_MEDIA_TYPES or kind in JSON_MEDIA_TYPES


def _invalid(message: str) -> MeshError:
    return MeshError(ErrorCode.INVALID_INPUT, message, field="document")


def admit_document(document: str, content_type: str, limits: IntakeLimits) -> str:
    """The document as YAML text, checked against `limits`; INVALID_INPUT otherwise.

    `content_type`: "" or a YAML media type reads YAML; a JSON media type reads
    strict JSON. Anything else is UNSUPPORTED_MEDIA_TYPE.
    """
    kind = media_type(content_type)
    if kind and kind not in YAML_MEDIA_TYPES and kind not in JSON_MEDIA_TYPES:
        raise MeshError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {kind!r} is not supported; send application/yaml or application/json",
            field="Content-Type",
        )
    size = len(document.encode("utf-8", "surrogatepass"))
    if size > limits.max_document_bytes:
        raise _invalid(f"document is {size} bytes, over the {limits.max_document_bytes} byte limit")
    if not document.strip():
        raise _invalid("document is empty")
    if kind in JSON_MEDIA_TYPES:
        document = _json_as_yaml(document)
    check_yaml_shape(document, limits)
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_as_yaml(text: str) -> str:
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise _invalid("document is nested too deeply") from None
    except ValueError as error:
        raise _invalid(f"invalid JSON: {str(error)[:200]}") from None
    if not isinstance(data, dict):
        raise _invalid("a model document must be a mapping")
    try:
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    except RecursionError:
        raise _invalid("document is nested too deeply") from None


def check_yaml_shape(text: str, limits: IntakeLimits) -> None:
    """Refuse YAML whose alias-expanded size or nesting is over the limits.

    Walks parser events only: a collection's expanded size is known when it
    ends, an alias costs the size of what its anchor named, and a running
    total per open collection stops a bomb at the first level that overflows.
    """
    stack: list[list[Any]] = []  # [anchor, expanded node count] per open collection
    anchors: dict[str, int] = {}
    total = 0

    def add(nodes: int) -> None:
        nonlocal total
        if stack:
            stack[-1][1] += nodes
            running = stack[-1][1]
        else:
            total += nodes
            running = total
        if running > limits.max_nodes:
            raise _invalid(
                f"document expands to more than {limits.max_nodes} YAML nodes (aliases counted expanded)"
            )

    try:
        for event in yaml.parse(text, Loader=_EVENT_LOADER):
            tag = getattr(event, "tag", None)
            if tag and tag != "!" and tag not in _SAFE_TAGS:
                raise _invalid(f"YAML tag {tag[:100]!r} is not allowed")
            if isinstance(event, yaml.ScalarEvent):
                if event.anchor:
                    anchors[event.anchor] = 1
                add(1)
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor not in anchors:
                    raise _invalid(f"unknown YAML alias {event.anchor!r}")
                add(anchors[event.anchor])
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                stack.append([event.anchor, 1])
                if len(stack) > limits.max_depth:
                    raise _invalid(f"document is nested deeper than {limits.max_depth} levels")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                anchor, nodes = stack.pop()
                if anchor:
                    anchors[anchor] = nodes
                add(nodes)
    except yaml.YAMLError as error:
        raise _invalid(f"invalid YAML: {_first_line(error)}") from None
    except RecursionError:
        raise _invalid("document is nested too deeply") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return " ".join(text.split())[:300] if text else type(error).__name__


# --- idempotency --------------------------------------------------------------


def idempotency_key_hash(key: str) -> str:
    """A store-safe name for an Idempotency-Key; INVALID_INPUT for an unusable key."""
    if len(key) > _MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable() or not key.isascii() or not key.strip():
        raise MeshError(
            ErrorCode.INVALID_INPUT,
            f"Idempotency-Key must be 1 to {_MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters",
            field="Idempotency-Key",
        )
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def document_digest(document: str) -> str:
    """What "the same body" means for an idempotent replay: the admitted document's digest."""
    return hashlib.sha256(document.encode("utf-8", "surrogatepass")).hexdigest()
