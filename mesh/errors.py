"""The mesh's one error hierarchy and its one status table.

Every failure a caller can see is a `MeshError` carrying an `ErrorCode`. The
table `ERROR_TABLE` says, for each code, the gRPC status, the HTTP status,
whether a retry can succeed and the default Retry-After. The gRPC services
and the HTTP facade both map through it, and a test walks every row.

On gRPC the error travels as the status code plus an `ErrorDetail` packed in
the rich status details (`grpc-status-details-bin`), so other languages can
read it with their standard status helpers.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2

from mesh.v1 import common_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


class ErrorCode(str, enum.Enum):
    """Wire error codes; the value is what `X-SIE-Error-Code` carries."""

    INVALID_INPUT = "INVALID_INPUT"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    BUNDLE_CONFLICT = "BUNDLE_CONFLICT"
    PROVISIONING = "PROVISIONING"
    MODEL_LOADING = "MODEL_LOADING"
    QUEUE_FULL = "QUEUE_FULL"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    LORA_LOADING = "LORA_LOADING"
    MODEL_LOAD_FAILED = "MODEL_LOAD_FAILED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    RATE_LIMIT = "RATE_LIMIT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    POOL_UNAVAILABLE = "POOL_UNAVAILABLE"
    POOL_NOT_FOUND = "POOL_NOT_FOUND"
    WORKER_FAILED = "WORKER_FAILED"
    CANCELLED = "CANCELLED"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    CONFIG_CONFLICT = "CONFIG_CONFLICT"
    CONFIG_INVALID = "CONFIG_INVALID"
    INTERNAL = "INTERNAL"
    UNSUPPORTED_OPERATION = "UNSUPPORTED_OPERATION"
    NOT_READY = "NOT_READY"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"


@dataclass(frozen=True)
class ErrorSpec:
    """How one error code surfaces on each wire."""

    grpc_status: grpc.StatusCode
    """gRPC status code of the RPC that failed with it."""
    http_status: int
    """HTTP status the facade answers with."""
    retryable: bool
    """Whether sending the same request again can succeed."""
    retry_after_s: float
    """Default Retry-After hint in seconds; 0 for none."""


ERROR_TABLE: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.INVALID_INPUT: ErrorSpec(grpc.StatusCode.INVALID_ARGUMENT, 400, False, 0),
    ErrorCode.MODEL_NOT_FOUND: ErrorSpec(grpc.StatusCode.NOT_FOUND, 404, False, 0),
    ErrorCode.BUNDLE_CONFLICT: ErrorSpec(grpc.StatusCode.FAILED_PRECONDITION, 409, False, 0),
    # The facade answers 202 instead for clients that predate 503 PROVISIONING.
    ErrorCode.PROVISIONING: ErrorSpec(grpc.StatusCode.UNAVAILABLE, 503, True, 120),
    ErrorCode.MODEL_LOADING: ErrorSpec(grpc.StatusCode.UNAVAILABLE, 503, True, 2),
    ErrorCode.QUEUE_FULL: ErrorSpec(grpc.StatusCode.RESOURCE_EXHAUSTED, 503, True, 1),
    ErrorCode.RESOURCE_EXHAUSTED: ErrorSpec(grpc.StatusCode.RESOURCE_EXHAUSTED, 503, True, 5),
    ErrorCode.LORA_LOADING: ErrorSpec(grpc.StatusCode.UNAVAILABLE, 503, True, 1),
    ErrorCode.MODEL_LOAD_FAILED: ErrorSpec(grpc.StatusCode.FAILED_PRECONDITION, 502, False, 0),
    ErrorCode.DEADLINE_EXCEEDED: ErrorSpec(grpc.StatusCode.DEADLINE_EXCEEDED, 504, True, 0),
    ErrorCode.RATE_LIMIT: ErrorSpec(grpc.StatusCode.RESOURCE_EXHAUSTED, 429, True, 1),
    ErrorCode.UNAUTHENTICATED: ErrorSpec(grpc.StatusCode.UNAUTHENTICATED, 401, False, 0),
    ErrorCode.PERMISSION_DENIED: ErrorSpec(grpc.StatusCode.PERMISSION_DENIED, 403, False, 0),
    # A pinned pool with no worker is not provisioning: the tenant owns it.
    ErrorCode.POOL_UNAVAILABLE: ErrorSpec(grpc.StatusCode.UNAVAILABLE, 503, True, 5),
    ErrorCode.POOL_NOT_FOUND: ErrorSpec(grpc.StatusCode.NOT_FOUND, 404, False, 0),
    ErrorCode.WORKER_FAILED: ErrorSpec(grpc.StatusCode.UNAVAILABLE, 502, True, 1),
    ErrorCode.CANCELLED: ErrorSpec(grpc.StatusCode.CANCELLED, 499, False, 0),
    ErrorCode.STORE_UNAVAILABLE: ErrorSpec(grpc.StatusCode.UNAVAILABLE, 503, True, 2),
    ErrorCode.CONFIG_CONFLICT: ErrorSpec(grpc.StatusCode.ALREADY_EXISTS, 409, False, 0),
    ErrorCode.CONFIG_INVALID: ErrorSpec(grpc.StatusCode.INVALID_ARGUMENT, 422, False, 0),
    ErrorCode.INTERNAL: ErrorSpec(grpc.StatusCode.INTERNAL, 500, False, 0),
    ErrorCode.UNSUPPORTED_OPERATION: ErrorSpec(grpc.StatusCode.UNIMPLEMENTED, 400, False, 0),
    ErrorCode.NOT_READY: ErrorSpec(grpc.StatusCode.UNAVAILABLE, 503, True, 1),
    ErrorCode.NOT_FOUND: ErrorSpec(grpc.StatusCode.NOT_FOUND, 404, False, 0),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorSpec(grpc.StatusCode.UNIMPLEMENTED, 405, False, 0),
    ErrorCode.PAYLOAD_TOO_LARGE: ErrorSpec(grpc.StatusCode.RESOURCE_EXHAUSTED, 413, False, 0),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: ErrorSpec(grpc.StatusCode.INVALID_ARGUMENT, 415, False, 0),
}

# Codes that exist only on HTTP; on gRPC they never arise (no routes, no bodies).
HTTP_ONLY_CODES = frozenset(
    {
        ErrorCode.NOT_FOUND,
        ErrorCode.METHOD_NOT_ALLOWED,
        ErrorCode.PAYLOAD_TOO_LARGE,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    }
)

_PROTO_PREFIX = "ERROR_CODE_"


def code_to_proto(code: ErrorCode) -> int:
    """The `mesh.v1.ErrorCode` value for a code (UNSPECIFIED for HTTP-only codes)."""
    name = _PROTO_PREFIX + code.value
    if name in common_pb2.ErrorCode.keys():  # noqa: SIM118 - an EnumTypeWrapper has keys(), not __contains__
        return common_pb2.ErrorCode.Value(name)
    return common_pb2.ERROR_CODE_UNSPECIFIED


def code_from_proto(value: int) -> ErrorCode:
    """The code for a `mesh.v1.ErrorCode` value; unknown values read as INTERNAL."""
    try:
        name = common_pb2.ErrorCode.Name(value)
    except ValueError:
        return ErrorCode.INTERNAL
    try:
        return ErrorCode(name.removeprefix(_PROTO_PREFIX))
    except ValueError:
        return ErrorCode.INTERNAL


@dataclass
class MeshError(Exception):
    """A failure with a wire code. Raise it anywhere; edges translate it."""

    code: ErrorCode
    message: str
    retry_after_s: float | None = None
    """Overrides the table's default Retry-After when set."""
    field: str = ""
    """The input field at fault, for INVALID_INPUT."""
    compatible_bundles: tuple[str, ...] = ()
    machine_profile: str = ""
    bundle: str = ""
    estimated_wait_s: float = 0.0
    extra: dict[str, object] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.code.value}: {self.message}")

    @property
    def spec(self) -> ErrorSpec:
        return ERROR_TABLE[self.code]

    @property
    def retryable(self) -> bool:
        return self.spec.retryable

    @property
    def effective_retry_after_s(self) -> float:
        """Retry-After to advertise: the override, else the table's default."""
        if self.retry_after_s is not None:
            return self.retry_after_s
        return self.spec.retry_after_s

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"

    def __hash__(self) -> int:
        return id(self)

    def to_detail(self) -> common_pb2.ErrorDetail:
        return common_pb2.ErrorDetail(
            code=code_to_proto(self.code),
            message=self.message,
            retry_after_s=self.effective_retry_after_s,
            retryable=self.retryable,
            compatible_bundles=list(self.compatible_bundles),
            machine_profile=self.machine_profile,
            bundle=self.bundle,
            estimated_wait_s=self.estimated_wait_s,
            field=self.field,
        )

    @classmethod
    def from_detail(cls, detail: common_pb2.ErrorDetail) -> MeshError:
        retry_after = detail.retry_after_s
        if not math.isfinite(retry_after) or retry_after < 0:
            retry_after = 0.0
        return cls(
            code=code_from_proto(detail.code),
            message=detail.message,
            retry_after_s=retry_after,
            field=detail.field,
            compatible_bundles=tuple(detail.compatible_bundles),
            machine_profile=detail.machine_profile,
            bundle=detail.bundle,
            estimated_wait_s=detail.estimated_wait_s,
        )

    def to_grpc_status(self) -> grpc.Status:
        """A status for `context.abort_with_status`, with the detail packed in."""
        packed = any_pb2.Any()
        packed.Pack(self.to_detail())
        grpc_code = self.spec.grpc_status
        rich = status_pb2.Status(code=grpc_code.value[0], message=self.message, details=[packed])
        return _RichStatus(grpc_code, self.message, ((STATUS_DETAILS_KEY, rich.SerializeToString()),))


@dataclass(frozen=True)
class _RichStatus(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, bytes], ...]


_GRPC_FALLBACK: dict[grpc.StatusCode, ErrorCode] = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.INVALID_INPUT,
    grpc.StatusCode.NOT_FOUND: ErrorCode.NOT_FOUND,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED: ErrorCode.CANCELLED,
    grpc.StatusCode.UNAUTHENTICATED: ErrorCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: ErrorCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE: ErrorCode.NOT_READY,
    grpc.StatusCode.UNIMPLEMENTED: ErrorCode.UNSUPPORTED_OPERATION,
}


def from_rpc_error(error: grpc.RpcError) -> MeshError:
    """Read a MeshError back from a failed RPC (rich details when present)."""
    trailing = error.trailing_metadata() or () if hasattr(error, "trailing_metadata") else ()
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                rich = status_pb2.Status.FromString(value)
            except Exception:  # noqa: BLE001 - a peer's garbage is not our crash
                break
            for packed in rich.details:
                detail = common_pb2.ErrorDetail()
                if packed.Unpack(detail):
                    return MeshError.from_detail(detail)
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    return MeshError(_GRPC_FALLBACK.get(code, ErrorCode.INTERNAL), message or str(code))
