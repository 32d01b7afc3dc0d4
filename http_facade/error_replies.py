"""MeshError -> HTTP reply, through mesh.errors.ERROR_TABLE (the one table).

Every error body is the SIE envelope `{"detail": {"code", "message"}}` (a
dict: the SDK's pool calls crash on a string detail) plus `X-SIE-Error-Code`,
and `Retry-After` when a retry can succeed. Error bodies are always JSON: the
SDK picks the decoder by Content-Type, and curl users can read them.

The one exception to the table is provisioning, which has two wire forms
because SDK releases disagree about it (see `provisioning_response`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from aiohttp import web

from mesh.errors import ErrorCode, MeshError

ERROR_CODE_HEADER = "X-SIE-Error-Code"

# sie-sdk up to 0.6.4 retries a 202 and does not know 503 PROVISIONING;
# 0.6.5 and later fail to decode the 202 and retry the 503 instead.
_FIRST_SDK_WITH_503_PROVISIONING = (0, 6, 5)
_VERSION_PREFIX = re.compile(r"\s*v?(\d{1,6})\.(\d{1,6})(?:\.(\d{1,6}))?")

# What aiohttp's own HTTP exceptions (routing, body size, upgrade checks) mean
# in mesh codes; their statuses still come from ERROR_TABLE.
_HTTP_EXCEPTION_CODES: dict[int, ErrorCode] = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    429: ErrorCode.RATE_LIMIT,
}


def retry_after_header(seconds: float) -> str:
    # Retry-After is whole seconds (RFC 9110); round up so a client never
    # comes back sooner than asked.
    return str(max(1, math.ceil(seconds)))


def error_body(error: MeshError) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": error.code.value, "message": error.message}
    if error.field:
        # The SDK surfaces detail.param as the offending field's name.
        detail["param"] = error.field
    if error.compatible_bundles:
        detail["compatible_bundles"] = list(error.compatible_bundles)
    if error.code is ErrorCode.PROVISIONING:
        detail["gpu"] = error.machine_profile or None
        detail["bundle"] = error.bundle or None
        if error.estimated_wait_s > 0:
            detail["estimated_wait_s"] = error.estimated_wait_s
    return {"detail": detail}


def error_response(error: MeshError) -> web.Response:
    spec = error.spec
    headers = {"Content-Type": "application/json", ERROR_CODE_HEADER: error.code.value}
    retry_after_s = error.effective_retry_after_s
    if spec.retryable and retry_after_s > 0:
        headers["Retry-After"] = retry_after_header(retry_after_s)
    if error.code is ErrorCode.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = "Bearer"
    allowed = error.extra.get("allowed_methods")
    if allowed:
        headers["Allow"] = ", ".join(allowed)  # type: ignore[arg-type]
    return web.Response(status=spec.http_status, body=json.dumps(error_body(error)).encode(), headers=headers)


def understands_503_provisioning(sdk_version: str | None) -> bool:
    """Whether a client with this X-SIE-SDK-Version retries 503 PROVISIONING.

    No header (curl, other clients) gets the documented 202. A header we
    cannot parse comes from an SDK new enough to send one in a form we do not
    know; 503 is also the safer answer for an old one, which retries any 503.
    """
    if not sdk_version:
        return False
    match = _VERSION_PREFIX.match(sdk_version)
    if match is None:
        return True
    major, minor, patch = (int(part or 0) for part in match.groups())
    return (major, minor, patch) >= _FIRST_SDK_WITH_503_PROVISIONING


def provisioning_response(error: MeshError, sdk_version: str | None, machine_profile: str) -> web.Response:
    """No capacity yet: 503 PROVISIONING for new SDKs, the documented 202 for the rest."""
    if understands_503_provisioning(sdk_version):
        return error_response(error)
    gpu = error.machine_profile or machine_profile or None
    body = {
        "status": "provisioning",
        "gpu": gpu,
        "bundle": error.bundle or "default",
        "estimated_wait_s": error.estimated_wait_s or error.effective_retry_after_s,
        "message": error.message,
    }
    headers = {"Content-Type": "application/json"}
    if error.effective_retry_after_s > 0:
        headers["Retry-After"] = retry_after_header(error.effective_retry_after_s)
    return web.Response(status=202, body=json.dumps(body).encode(), headers=headers)


def from_http_exception(exc: web.HTTPException, method: str, path: str) -> MeshError:
    """An aiohttp HTTP exception (no route, wrong method, body too large, ...) as a MeshError."""
    code = _HTTP_EXCEPTION_CODES.get(exc.status)
    if code is None:
        code = ErrorCode.INVALID_INPUT if 400 <= exc.status < 500 else ErrorCode.INTERNAL
    shown_path = path if len(path) <= 200 else path[:200] + "..."
    extra: dict[str, object] = {}
    if code is ErrorCode.NOT_FOUND:
        message = f"no route for {method} {shown_path}"
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = tuple(sorted(exc.allowed_methods))
        extra["allowed_methods"] = allowed
        message = f"{method} is not allowed on {shown_path}; allowed: {', '.join(allowed)}"
    elif code is ErrorCode.PAYLOAD_TOO_LARGE:
        message = "request body is over the size limit"
    else:
        message = (exc.text or exc.reason)[:300]
    return MeshError(code, message, extra=extra)
