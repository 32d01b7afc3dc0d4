"""The bundle config hash: the reference test vector and its normalisation rules."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from mesh.catalog import (
    DEFAULT_BUNDLE_CONFIG_HASH,
    BundleConfig,
    Catalog,
    ConfigSource,
    config_hash,
    load_catalog,
    parse_model_document,
)

VECTOR = "b34bdac36fb2882c67587534f9ba43f68278654b1513b5d5d820b979cf902ac4"

MINILM = {
    "sie_id": "sentence-transformers/all-MiniLM-L6-v2",
    "revision": "1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
    "profiles": {
        "default": {
            "adapter_path": "sie_server.adapters.sentence_transformer:SentenceTransformerDenseAdapter",
            "max_batch_tokens": 16384,
            "adapter_options": {
                "loadtime": {"trust_remote_code": False},
                "runtime": {"pooling": "mean", "normalize": True},
            },
        }
    },
}
ST_BUNDLE = BundleConfig(name="st", adapters=("sie_server.adapters.sentence_transformer",))


def _model(doc: dict) -> object:
    return parse_model_document(doc, source=ConfigSource.API, origin="test")


def _hash(*docs: dict) -> str:
    return Catalog([ST_BUNDLE], [_model(d) for d in docs]).bundle_config_hash("st")


def test_builtin_default_bundle_hash_is_the_reference_vector() -> None:
    assert DEFAULT_BUNDLE_CONFIG_HASH == VECTOR
    assert load_catalog().bundle_config_hash("default") == VECTOR


def test_reference_document_hashes_to_the_vector() -> None:
    assert _hash(MINILM) == VECTOR


def test_the_vector_is_sha256_of_the_documented_canonical_json() -> None:
    # Guards config_hash against drifting from the wording of the reference.
    model = _model(MINILM)
    text = json.dumps([model.hash_entry(["default"])], sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(text.encode()).hexdigest() == VECTOR
    assert config_hash([(model, ["default"])]) == VECTOR


def test_empty_bundle_hashes_to_empty_string() -> None:
    assert config_hash([]) == ""
    empty = BundleConfig(name="empty", adapters=("nothing.here",))
    assert Catalog([ST_BUNDLE, empty], [_model(MINILM)]).bundle_config_hash("empty") == ""


def test_unknown_bundle_hashes_to_empty_string() -> None:
    assert load_catalog().bundle_config_hash("no-such-bundle") == ""


def test_hf_revision_is_the_revision() -> None:
    doc = copy.deepcopy(MINILM)
    doc["hf_revision"] = doc.pop("revision")
    assert _hash(doc) == VECTOR


@pytest.mark.parametrize(
    "options",
    [None, {}, {"loadtime": {}}, {"runtime": {}, "loadtime": {}}, {"loadtime": None, "runtime": {}}],
    ids=["absent", "empty", "empty-loadtime", "both-empty", "null-and-empty"],
)
def test_no_truthy_adapter_options_hash_as_null(options: dict | None) -> None:
    doc = copy.deepcopy(MINILM)
    profile = doc["profiles"]["default"]
    if options is None:
        del profile["adapter_options"]
    else:
        profile["adapter_options"] = options
    entry = _model(doc).hash_entry(["default"])
    assert entry["profiles"][0]["config"]["adapter_options"] is None
    reference = copy.deepcopy(MINILM)
    del reference["profiles"]["default"]["adapter_options"]
    assert _hash(doc) == _hash(reference)


def test_an_empty_block_is_dropped_next_to_a_full_one() -> None:
    doc = copy.deepcopy(MINILM)
    doc["profiles"]["default"]["adapter_options"]["loadtime"] = {}
    entry = _model(doc).hash_entry(["default"])
    assert entry["profiles"][0]["config"]["adapter_options"] == {
        "runtime": {"pooling": "mean", "normalize": True}
    }


def test_extends_is_resolved_before_hashing() -> None:
    flat = copy.deepcopy(MINILM)
    flat["profiles"]["fast"] = copy.deepcopy(flat["profiles"]["default"])
    flat["profiles"]["fast"]["max_batch_tokens"] = 4096
    extended = copy.deepcopy(MINILM)
    extended["profiles"]["fast"] = {"extends": "default", "max_batch_tokens": 4096}
    assert _hash(flat) == _hash(extended) != VECTOR


def test_models_sort_by_id_and_profiles_by_name() -> None:
    other = copy.deepcopy(MINILM)
    other["sie_id"] = "aaa/first"
    other["profiles"] = {"z": MINILM["profiles"]["default"], "a": MINILM["profiles"]["default"]}
    left = config_hash([(_model(MINILM), ["default"]), (_model(other), ["z", "a"])])
    right = config_hash([(_model(other), ["a", "z"]), (_model(MINILM), ["default"])])
    assert left == right
    assert _hash(MINILM, other) == _hash(other, MINILM) == left


def test_only_profiles_routable_to_the_bundle_count() -> None:
    doc = copy.deepcopy(MINILM)
    doc["profiles"]["rerank"] = {"adapter_path": "other.adapters.cross:Cross", "max_batch_tokens": 10}
    other_bundle = BundleConfig(name="other", adapters=("other.adapters.cross",))
    catalog = Catalog([ST_BUNDLE, other_bundle], [_model(doc)])
    assert catalog.bundle_config_hash("st") == VECTOR
    assert catalog.bundle_config_hash("other") not in ("", VECTOR)
    assert [list(m.profiles) for m in catalog.models_for_bundle("st")] == [["default"]]


def test_any_change_to_a_hashed_field_changes_the_hash() -> None:
    for path, value in [
        (("revision",), "0" * 40),
        (("profiles", "default", "max_batch_tokens"), 8192),
        (("profiles", "default", "compute_precision"), "float16"),
        (("profiles", "default", "adapter_options", "runtime", "normalize"), False),
    ]:
        doc = copy.deepcopy(MINILM)
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert _hash(doc) != VECTOR, path


def test_fields_outside_the_hash_do_not_change_it() -> None:
    doc = copy.deepcopy(MINILM)
    doc["inputs"] = ["text"]
    doc["tasks"] = ["encode"]
    doc["hf_id"] = "sentence-transformers/all-MiniLM-L6-v2"
    doc["description"] = "kept, not hashed"
    assert _hash(doc) == VECTOR
