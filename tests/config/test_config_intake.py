"""Document admission (size, YAML bombs, depth, media types) and the ACK view: pure code."""

from __future__ import annotations

import json

import pytest
import yaml

from mesh.config_api import IntakeLimits, WorkerConfigView, ack_progress, admit_document, bundle_ack_status
from mesh.config_api.document_intake import idempotency_key_hash, is_supported_media_type
from mesh.errors import ErrorCode, MeshError
from tests.config.config_docs import model_yaml, yaml_bomb

pytestmark = pytest.mark.timeout(10)

LIMITS = IntakeLimits()


def refused(document: str, content_type: str = "", limits: IntakeLimits = LIMITS) -> MeshError:
    with pytest.raises(MeshError) as caught:
        admit_document(document, content_type, limits)
    return caught.value


def test_a_plain_model_document_passes_unchanged():
    document = model_yaml()
    assert admit_document(document, "application/yaml", LIMITS) == document
    assert admit_document(document, "", LIMITS) == document


def test_json_becomes_the_same_yaml_document():
    data = yaml.safe_load(model_yaml())
    admitted = admit_document(json.dumps(data), "application/json; charset=utf-8", LIMITS)
    assert yaml.safe_load(admitted) == data


@pytest.mark.parametrize(
    ("document", "content_type", "why"),
    [
        ("sie_id: [unclosed", "", "invalid YAML"),
        ("{not json", "application/json", "invalid JSON"),
        ('{"a": NaN}', "application/json", "invalid JSON"),
        ("[1, 2]", "application/json", "must be a mapping"),
        ("   \n", "", "empty"),
        ("a: *nowhere", "", "alias"),
        ("!!python/object:os.system {}", "", "not allowed"),
        ("a: !custom 1", "", "not allowed"),
    ],
)
def test_unparsable_documents_are_invalid_input(document, content_type, why):
    error = refused(document, content_type)
    assert error.code is ErrorCode.INVALID_INPUT
    assert why in error.message


def test_a_yaml_bomb_is_refused_without_expanding_it():
    error = refused(yaml_bomb(levels=9, width=9))  # 9**9 nodes if expanded
    assert error.code is ErrorCode.INVALID_INPUT
    assert "expands to more than" in error.message


def test_moderate_aliases_are_fine():
    document = model_yaml() + "x-shared: &shared {a: 1}\nx-copy: *shared\n"
    assert admit_document(document, "", LIMITS) == document


def test_oversized_and_deep_documents_are_refused():
    assert "byte limit" in refused("a: " + "x" * 300_000).message
    deep = "a: " + "[" * 40 + "]" * 40
    assert "nested deeper" in refused(deep).message
    assert (
        "nested too deeply"
        in refused('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "application/json").message
    )


def test_other_media_types_are_unsupported():
    assert refused(model_yaml(), "text/plain").code is ErrorCode.UNSUPPORTED_MEDIA_TYPE
    assert not is_supported_media_type("application/x-www-form-urlencoded")
    assert is_supported_media_type("text/yaml") and is_supported_media_type("")


@pytest.mark.parametrize("key", ["", " ", "x" * 257, "caf\u00e9", "a\nb"])
def test_unusable_idempotency_keys_are_invalid_input(key):
    with pytest.raises(MeshError) as caught:
        idempotency_key_hash(key)
    assert caught.value.code is ErrorCode.INVALID_INPUT


def view(worker_id: str, bundle: str, *hashes: str) -> WorkerConfigView:
    return WorkerConfigView(worker_id, bundle, frozenset(hashes))


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        # (acked, pending, bundles with workers, ack pending)
        ([], ((), (), 0, False)),
        ([view("w1", "default", "h1")], (("w1",), (), 1, False)),
        ([view("w1", "default", "old")], ((), ("w1",), 1, True)),
        ([view("w1", "default", "old", "h1"), view("w2", "default", "old")], (("w1",), ("w2",), 1, False)),
        ([view("w1", "default", "h1"), view("w2", "full", "old")], (("w1",), ("w2",), 2, True)),
        ([view("w3", "gliner", "h1")], ((), (), 0, False)),
    ],
)
def test_ack_progress_needs_one_ack_per_eligible_bundle_with_workers(workers, expected):
    progress = ack_progress(["default", "full"], {"default": "h1", "full": "h2"}, workers)
    assert (
        progress.acked_workers,
        progress.pending_workers,
        progress.eligible_bundles_with_workers_count,
        progress.worker_ack_pending,
    ) == expected
    assert progress.eligible_bundles_count == 2
    assert progress.total_eligible == len(expected[0]) + len(expected[1])


def test_bundle_ack_status_matches_bundles_case_insensitively():
    status = bundle_ack_status("Default", "h1", [view("w1", "default", "h1"), view("w2", "default", "")])
    assert (status.acked_workers, status.pending_workers) == (("w1",), ("w2",))
