"""Body codecs: JSON for curl, MessagePack for the SDK.

The request body's codec comes from Content-Type, the reply's from Accept
(JSON when the client names neither). Decoding is strict about what a client
can smuggle in (NaN, trailing bytes, non-string map keys, nesting) and turns
every failure into INVALID_INPUT, never an exception a handler must think about.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import msgpack

from mesh.errors import ErrorCode, MeshError

JSON_CONTENT_TYPE = "application/json"
MSGPACK_CONTENT_TYPE = "application/msgpack"
_MSGPACK_TYPES = frozenset({"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"})


class Codec(enum.Enum):
    JSON = JSON_CONTENT_TYPE
    MSGPACK = MSGPACK_CONTENT_TYPE

    @property
    def content_type(self) -> str:
        return self.value


def request_codec(content_type_header: str | None) -> Codec:
    """The codec of a request body; a body that is neither JSON nor msgpack is 415."""
    if not content_type_header:
        # curl without -H sends a form type, not nothing; a missing header is a
        # hand-written client, and JSON is the documented default.
        return Codec.JSON
    media_type = content_type_header.partition(";")[0].strip().lower()
    if media_type == JSON_CONTENT_TYPE:
        return Codec.JSON
    if media_type in _MSGPACK_TYPES:
        return Codec.MSGPACK
    raise MeshError(
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        f"Content-Type {media_type!r} is not supported; send application/json or application/msgpack",
        field="Content-Type",
    )


def reply_codec(accept_header: str | None) -> Codec:
    """The codec of a reply: msgpack when Accept names it, JSON otherwise."""
    if accept_header and "msgpack" in accept_header:
        return Codec.MSGPACK
    return Codec.JSON


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode_body(raw: bytes, codec: Codec) -> Any:
    """The decoded body, or INVALID_INPUT saying why it is not one."""
    if not raw:
        raise MeshError(ErrorCode.INVALID_INPUT, "request body is empty", field="body")
    try:
        if codec is Codec.MSGPACK:
            # strict_map_key keeps keys to str/bytes; raw=False rejects invalid UTF-8.
            return msgpack.unpackb(raw, raw=False, strict_map_key=True)
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise MeshError(ErrorCode.INVALID_INPUT, "request body is nested too deeply", field="body") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        kind = "MessagePack" if codec is Codec.MSGPACK else "JSON"
        raise MeshError(
            ErrorCode.INVALID_INPUT, f"request body is not valid {kind}: {_short(exc)}", field="body"
        ) from None


def encode_reply(value: Any, codec: Codec) -> bytes:
    if codec is Codec.MSGPACK:
        return msgpack.packb(value, use_bin_type=True)
    return json.dumps(value, separators=(",", ":")).encode()


def _short(exc: BaseException) -> str:
    # Decoder messages can quote the body; keep the reply small and free of it.
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
