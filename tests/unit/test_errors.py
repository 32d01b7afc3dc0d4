"""The one status table, walked row by row on both wires."""

import grpc
import pytest
from google.rpc import status_pb2

from mesh.errors import (
    ERROR_TABLE,
    HTTP_ONLY_CODES,
    STATUS_DETAILS_KEY,
    ErrorCode,
    MeshError,
    code_from_proto,
    code_to_proto,
    from_rpc_error,
)
from mesh.v1 import common_pb2

# What the wire reference requires, stated independently of the table.
EXPECTED_HTTP = {
    ErrorCode.INVALID_INPUT: 400,
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.BUNDLE_CONFLICT: 409,
    ErrorCode.PROVISIONING: 503,
    ErrorCode.MODEL_LOADING: 503,
    ErrorCode.QUEUE_FULL: 503,
    ErrorCode.RESOURCE_EXHAUSTED: 503,
    ErrorCode.LORA_LOADING: 503,
    ErrorCode.MODEL_LOAD_FAILED: 502,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.RATE_LIMIT: 429,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.CONFIG_CONFLICT: 409,
    ErrorCode.CONFIG_INVALID: 422,
    ErrorCode.STORE_UNAVAILABLE: 503,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
}
RETRY_AFTER_REQUIRED = {
    ErrorCode.PROVISIONING,
    ErrorCode.MODEL_LOADING,
    ErrorCode.QUEUE_FULL,
    ErrorCode.RESOURCE_EXHAUSTED,
    ErrorCode.LORA_LOADING,
    ErrorCode.RATE_LIMIT,
}


def test_every_code_has_a_row():
    assert set(ERROR_TABLE) == set(ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_row_matches_the_wire_reference(code):
    spec = ERROR_TABLE[code]
    if code in EXPECTED_HTTP:
        assert spec.http_status == EXPECTED_HTTP[code]
    assert 400 <= spec.http_status <= 599
    if code in RETRY_AFTER_REQUIRED:
        assert spec.retryable and spec.retry_after_s > 0
    if code is ErrorCode.MODEL_LOAD_FAILED:
        assert not spec.retryable and spec.retry_after_s == 0
    if code is ErrorCode.QUEUE_FULL:
        assert spec.retry_after_s == 1


@pytest.mark.parametrize("code", [c for c in ErrorCode if c not in HTTP_ONLY_CODES])
def test_code_round_trips_through_the_proto_enum(code):
    assert code_from_proto(code_to_proto(code)) is code


def test_every_proto_code_is_a_mesh_code():
    for name, value in common_pb2.ErrorCode.items():
        if value == common_pb2.ERROR_CODE_UNSPECIFIED:
            continue
        assert code_from_proto(value).value == name.removeprefix("ERROR_CODE_")


def test_unknown_proto_value_reads_as_internal():
    assert code_from_proto(9999) is ErrorCode.INTERNAL


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code, details, trailing=()):
        self._code, self._details, self._trailing = code, details, trailing

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing


@pytest.mark.parametrize("code", [c for c in ErrorCode if c not in HTTP_ONLY_CODES])
def test_grpc_status_carries_the_detail(code):
    error = MeshError(code, "why", retry_after_s=7.0, field="items", compatible_bundles=("a", "b"))
    status = error.to_grpc_status()
    assert status.code is ERROR_TABLE[code].grpc_status
    ((key, value),) = status.trailing_metadata
    assert key == STATUS_DETAILS_KEY
    rich = status_pb2.Status.FromString(value)
    assert rich.code == status.code.value[0]
    back = from_rpc_error(_FakeRpcError(status.code, status.details, status.trailing_metadata))
    assert back.code is code
    assert back.message == "why"
    assert back.effective_retry_after_s == 7.0
    assert back.field == "items"
    assert back.compatible_bundles == ("a", "b")


def test_plain_grpc_errors_map_by_status():
    assert (
        from_rpc_error(_FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "late")).code
        is ErrorCode.DEADLINE_EXCEEDED
    )
    assert from_rpc_error(_FakeRpcError(grpc.StatusCode.UNKNOWN, "?")).code is ErrorCode.INTERNAL


def test_garbage_details_do_not_crash():
    error = _FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down", ((STATUS_DETAILS_KEY, b"\xff\x00garbage"),))
    assert from_rpc_error(error).code is ErrorCode.NOT_READY


def test_non_finite_retry_after_from_a_peer_is_dropped():
    detail = common_pb2.ErrorDetail(code=common_pb2.ERROR_CODE_QUEUE_FULL, retry_after_s=float("nan"))
    assert MeshError.from_detail(detail).effective_retry_after_s == 0.0
