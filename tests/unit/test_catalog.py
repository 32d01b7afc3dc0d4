"""Catalog: built-ins, resolution, `extends`, append-only writes and file loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mesh.catalog import (
    GLINER_MODEL_ID,
    MINILM_MODEL_ID,
    RERANKER_MODEL_ID,
    Catalog,
    ConfigSource,
    load_catalog,
    parse_model_document,
)
from mesh.errors import ErrorCode, MeshError

ST = "sie_server.adapters.sentence_transformer:SentenceTransformerDenseAdapter"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _raises(code: ErrorCode, call, *args, **kwargs) -> MeshError:
    with pytest.raises(MeshError) as caught:
        call(*args, **kwargs)
    assert caught.value.code is code, caught.value
    return caught.value


# --- built-ins -----------------------------------------------------------------


def test_builtin_catalog(catalog: Catalog) -> None:
    assert [(b.name, b.priority) for b in catalog.bundles] == [
        ("gliner", 50),
        ("default", 100),
        ("full", 200),
    ]
    assert {m.sie_id for m in catalog.models} == {MINILM_MODEL_ID, RERANKER_MODEL_ID, GLINER_MODEL_ID}
    assert [m.sie_id for m in catalog.models_for_bundle("default")] == [MINILM_MODEL_ID]
    assert all(b.source is ConfigSource.BUILTIN for b in catalog.bundles)
    assert catalog.warnings == ()


def test_lookups_are_case_insensitive(catalog: Catalog) -> None:
    assert catalog.model(MINILM_MODEL_ID.upper()).sie_id == MINILM_MODEL_ID
    assert catalog.bundle("DEFAULT").name == "default"
    assert catalog.model("nope/nope") is None
    assert catalog.bundle("nope") is None
    assert catalog.models_for_bundle("nope") == []


# --- resolution ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "profile", "model_id", "chosen", "bundles", "compatible"),
    [
        # Priority order: gliner (50) before full (200).
        (GLINER_MODEL_ID, "", GLINER_MODEL_ID, "default", ("gliner", "full"), ("gliner", "full")),
        (MINILM_MODEL_ID, "", MINILM_MODEL_ID, "default", ("default", "full"), ("default", "full")),
        (RERANKER_MODEL_ID, "", RERANKER_MODEL_ID, "default", ("full",), ("full",)),
        # Case-insensitive id, canonical case back.
        (
            "SENTENCE-TRANSFORMERS/all-minilm-l6-v2",
            "",
            MINILM_MODEL_ID,
            "default",
            ("default", "full"),
            ("default", "full"),
        ),
        # Override to a compatible bundle that is not the preferred one.
        (f"full:/{GLINER_MODEL_ID}", "", GLINER_MODEL_ID, "default", ("full",), ("gliner", "full")),
        (f"FULL:/{GLINER_MODEL_ID}", "", GLINER_MODEL_ID, "default", ("full",), ("gliner", "full")),
        # Profile from the suffix, from the option, or both agreeing.
        (
            f"{GLINER_MODEL_ID}:high-recall",
            "",
            GLINER_MODEL_ID,
            "high-recall",
            ("gliner", "full"),
            ("gliner", "full"),
        ),
        (
            GLINER_MODEL_ID,
            "high-recall",
            GLINER_MODEL_ID,
            "high-recall",
            ("gliner", "full"),
            ("gliner", "full"),
        ),
        (
            f"{GLINER_MODEL_ID}:high-recall",
            "high-recall",
            GLINER_MODEL_ID,
            "high-recall",
            ("gliner", "full"),
            ("gliner", "full"),
        ),
        (
            f"gliner:/{GLINER_MODEL_ID}:high-recall",
            "",
            GLINER_MODEL_ID,
            "high-recall",
            ("gliner",),
            ("gliner", "full"),
        ),
    ],
)
def test_resolution(catalog: Catalog, path, profile, model_id, chosen, bundles, compatible) -> None:
    resolution = catalog.resolve(path, profile)
    assert (resolution.model_id, resolution.profile, resolution.bundles, resolution.compatible_bundles) == (
        model_id,
        chosen,
        bundles,
        compatible,
    )
    assert resolution.resolved_bundle == bundles[0]
    assert resolution.config.name == chosen
    assert resolution.bundle_override == (bundles[0] if ":/" in path else "")


@pytest.mark.parametrize(
    ("path", "profile", "code", "field", "compatible"),
    [
        ("acme/unknown", "", ErrorCode.MODEL_NOT_FOUND, "", ()),
        (f"default:/{GLINER_MODEL_ID}", "", ErrorCode.BUNDLE_CONFLICT, "", ("gliner", "full")),
        (f"gliner:/{MINILM_MODEL_ID}", "", ErrorCode.BUNDLE_CONFLICT, "", ("default", "full")),
        (f"nosuch:/{MINILM_MODEL_ID}", "", ErrorCode.BUNDLE_CONFLICT, "", ("default", "full")),
        (f"{MINILM_MODEL_ID}:nope", "", ErrorCode.INVALID_INPUT, "profile", ()),
        (MINILM_MODEL_ID, "nope", ErrorCode.INVALID_INPUT, "profile", ()),
        (f"{GLINER_MODEL_ID}:default", "high-recall", ErrorCode.INVALID_INPUT, "profile", ()),
        ("not a path", "", ErrorCode.INVALID_INPUT, "model", ()),
    ],
)
def test_resolution_errors(catalog: Catalog, path, profile, code, field, compatible) -> None:
    error = _raises(code, catalog.resolve, path, profile)
    assert error.field == field
    assert error.compatible_bundles == compatible
    assert (
        error.spec.http_status
        == {
            ErrorCode.MODEL_NOT_FOUND: 404,
            ErrorCode.BUNDLE_CONFLICT: 409,
            ErrorCode.INVALID_INPUT: 400,
        }[code]
    )


def test_override_records_the_catalog_spelling(catalog: Catalog) -> None:
    assert catalog.resolve(f"FULL:/{GLINER_MODEL_ID}").bundle_override == "full"
    assert catalog.resolve(GLINER_MODEL_ID).bundle_override == ""


def test_default_profile_is_first_by_name_without_a_default() -> None:
    model = parse_model_document(
        {
            "sie_id": "a/b",
            "profiles": {
                "zeta": {"adapter_path": ST, "max_batch_tokens": 1},
                "alpha": {"adapter_path": ST, "max_batch_tokens": 2},
            },
        },
        source=ConfigSource.API,
        origin="test",
    )
    catalog = Catalog(load_catalog().bundles, [model])
    assert catalog.resolve("a/b").profile == "alpha"


# --- extends ---------------------------------------------------------------------


def _parse(profiles: dict) -> object:
    return parse_model_document(
        {"sie_id": "a/b", "profiles": profiles}, source=ConfigSource.API, origin="test"
    )


BASE = {
    "adapter_path": ST,
    "max_batch_tokens": 100,
    "compute_precision": "float16",
    "adapter_options": {"loadtime": {"x": 1}, "runtime": {"y": 2, "z": 3}},
}


@pytest.mark.parametrize(
    ("child", "expected"),
    [
        # Everything inherits.
        ({"extends": "base"}, (ST, 100, "float16", {"x": 1}, {"y": 2, "z": 3})),
        # Scalars override one by one.
        ({"extends": "base", "max_batch_tokens": 7}, (ST, 7, "float16", {"x": 1}, {"y": 2, "z": 3})),
        # A non-empty runtime block replaces the parent's whole block (no deep merge).
        (
            {"extends": "base", "adapter_options": {"runtime": {"y": 9}}},
            (ST, 100, "float16", {"x": 1}, {"y": 9}),
        ),
        # An empty block inherits.
        (
            {"extends": "base", "adapter_options": {"loadtime": {}, "runtime": {}}},
            (ST, 100, "float16", {"x": 1}, {"y": 2, "z": 3}),
        ),
        (
            {"extends": "base", "adapter_options": {"loadtime": {"q": True}}},
            (ST, 100, "float16", {"q": True}, {"y": 2, "z": 3}),
        ),
    ],
)
def test_extends(child: dict, expected: tuple) -> None:
    profile = _parse({"base": BASE, "child": child}).profiles["child"]
    assert (
        profile.adapter_path,
        profile.max_batch_tokens,
        profile.compute_precision,
        dict(profile.loadtime),
        dict(profile.runtime),
    ) == expected
    assert profile.extends == "base"


def test_extends_chains_resolve_through_every_level() -> None:
    model = _parse(
        {
            "c": {"extends": "b", "max_batch_tokens": 3},
            "b": {"extends": "a", "compute_precision": "bf16"},
            "a": BASE,
        }
    )
    assert (model.profiles["c"].max_batch_tokens, model.profiles["c"].compute_precision) == (3, "bf16")
    assert list(model.profiles) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("profiles", "field"),
    [
        ({"a": {"extends": "missing"}}, "profiles.a.extends"),
        # The edge that closes the cycle is named: a -> b -> a.
        ({"a": {"extends": "b"}, "b": {"extends": "a"}}, "profiles.b.extends"),
        ({"a": {"extends": "a"}}, "profiles.a.extends"),
        ({"a": {"max_batch_tokens": 3}}, "profiles.a.adapter_path"),
        ({"a": {"adapter_path": ST}}, "profiles.a.max_batch_tokens"),
        ({"a": {"adapter_path": ST, "max_batch_tokens": 0}}, "profiles.a.max_batch_tokens"),
        ({"a": {"adapter_path": ST, "max_batch_tokens": True}}, "profiles.a.max_batch_tokens"),
        ({"a": {"adapter_path": "no-class", "max_batch_tokens": 1}}, "profiles.a.adapter_path"),
        (
            {"a": {"adapter_path": ST, "max_batch_tokens": 1, "adapter_options": {"runtime": [1]}}},
            "profiles.a.adapter_options.runtime",
        ),
        ({}, "profiles"),
    ],
)
def test_invalid_profiles_are_config_invalid(profiles: dict, field: str) -> None:
    error = _raises(ErrorCode.CONFIG_INVALID, _parse, profiles)
    assert error.field == field
    assert error.message.startswith("test: ")


# --- append-only writes -------------------------------------------------------------


def _doc(profiles: dict, sie_id: str = GLINER_MODEL_ID, **fields) -> str:
    return yaml.safe_dump({"sie_id": sie_id, **fields, "profiles": profiles})


GLINER_DEFAULT = {
    "adapter_path": "sie_server.adapters.gliner:GLiNERAdapter",
    "max_batch_tokens": 8192,
    "adapter_options": {"runtime": {"threshold": 0.5, "flat_ner": True}},
}


@pytest.mark.parametrize(
    ("document", "created", "skipped"),
    [
        # A brand-new model.
        (
            _doc({"default": {"adapter_path": ST, "max_batch_tokens": 512}}, sie_id="acme/new-embedder"),
            ("default",),
            (),
        ),
        # Identical existing profile: idempotent.
        (_doc({"default": GLINER_DEFAULT}), (), ("default",)),
        # Same content written another way (empty loadtime, id in another case) is identical.
        (
            _doc(
                {
                    "default": {
                        **GLINER_DEFAULT,
                        "adapter_options": {"loadtime": {}, **GLINER_DEFAULT["adapter_options"]},
                    }
                },
                sie_id=GLINER_MODEL_ID.upper(),
            ),
            (),
            ("default",),
        ),
        # New profile next to an identical one.
        (
            _doc({"default": GLINER_DEFAULT, "tiny": {"extends": "default", "max_batch_tokens": 512}}),
            ("tiny",),
            ("default",),
        ),
        # New profile extending a profile only the stored config has.
        (
            _doc({"strict": {"extends": "high-recall", "adapter_options": {"runtime": {"threshold": 0.9}}}}),
            ("strict",),
            (),
        ),
        # JSON is YAML too.
        (
            json.dumps(
                {"sie_id": "acme/json-model", "profiles": {"p": {"adapter_path": ST, "max_batch_tokens": 8}}}
            ),
            ("p",),
            (),
        ),
    ],
    ids=["new-model", "identical", "identical-normalised", "new-beside-identical", "extends-stored", "json"],
)
def test_append_only_accepts(catalog: Catalog, document: str, created: tuple, skipped: tuple) -> None:
    updated, result = catalog.with_model_document(document)
    assert (result.created_profiles, result.existing_profiles_skipped) == (created, skipped)
    assert result.unchanged == (not created)
    if not created:
        assert updated is catalog
    else:
        model = updated.model(result.model_id)
        assert set(created) <= set(model.profiles)
        assert model.source is ConfigSource.API
        # The new profile routes, and the original catalog is untouched.
        assert updated.resolve(result.model_id, created[0]).bundles
        assert catalog.model(result.model_id) is None or not set(created) & set(
            catalog.model(result.model_id).profiles
        )
        # The stored form round-trips to the same model.
        again = parse_model_document(
            yaml.safe_load(updated.canonical_model_yaml(result.model_id)), source=ConfigSource.API, origin="t"
        )
        assert {n: p.fingerprint() for n, p in again.profiles.items()} == {
            n: p.fingerprint() for n, p in model.profiles.items()
        }


def test_appended_profile_keeps_the_stored_model_id_spelling(catalog: Catalog) -> None:
    updated, result = catalog.with_model_document(
        _doc({"tiny": {"extends": "default", "max_batch_tokens": 8}}, sie_id=GLINER_MODEL_ID.upper())
    )
    assert result.model_id == GLINER_MODEL_ID
    assert any("spelling" in w for w in result.warnings)
    assert [m.sie_id for m in updated.models].count(GLINER_MODEL_ID) == 1


def test_appending_changes_the_hash_of_bundles_that_serve_it(catalog: Catalog) -> None:
    updated, _ = catalog.with_model_document(_doc({"tiny": {"extends": "default", "max_batch_tokens": 8}}))
    assert updated.bundle_config_hash("gliner") != catalog.bundle_config_hash("gliner")
    assert updated.bundle_config_hash("default") == catalog.bundle_config_hash("default")


@pytest.mark.parametrize(
    ("document", "code", "field"),
    [
        (
            _doc({"default": {**GLINER_DEFAULT, "max_batch_tokens": 1}}),
            ErrorCode.CONFIG_CONFLICT,
            "profiles.default",
        ),
        (
            _doc(
                {
                    "default": {
                        **GLINER_DEFAULT,
                        "adapter_options": {"runtime": {"threshold": 0.5, "flat_ner": 1}},
                    }
                }
            ),
            ErrorCode.CONFIG_CONFLICT,
            "profiles.default",
        ),
        (
            _doc({"default": GLINER_DEFAULT}, sie_id=MINILM_MODEL_ID, revision="0" * 40),
            ErrorCode.CONFIG_CONFLICT,
            "revision",
        ),
        ("sie_id: [unclosed", ErrorCode.INVALID_INPUT, "document"),
        ("- just\n- a list\n", ErrorCode.INVALID_INPUT, "document"),
        ("", ErrorCode.INVALID_INPUT, "document"),
        (_doc({"default": GLINER_DEFAULT}, sie_id="bad id/with space"), ErrorCode.INVALID_INPUT, "sie_id"),
        (_doc({"default": GLINER_DEFAULT}, sie_id="default:/org/model"), ErrorCode.INVALID_INPUT, "sie_id"),
        (yaml.safe_dump({"profiles": {"default": GLINER_DEFAULT}}), ErrorCode.CONFIG_INVALID, "sie_id"),
        (yaml.safe_dump({"sie_id": "acme/x"}), ErrorCode.CONFIG_INVALID, "profiles"),
        (
            _doc(
                {"p": {"adapter_path": "acme.adapters.custom:Custom", "max_batch_tokens": 8}}, sie_id="acme/x"
            ),
            ErrorCode.CONFIG_INVALID,
            "profiles.p.adapter_path",
        ),
        (
            _doc({"p": {"adapter_path": ST}}, sie_id="acme/x"),
            ErrorCode.CONFIG_INVALID,
            "profiles.p.max_batch_tokens",
        ),
        (_doc({"p": {"extends": "nope"}}), ErrorCode.CONFIG_INVALID, "profiles.p.extends"),
    ],
    ids=[
        "changed-profile",
        "bool-vs-int",
        "changed-revision",
        "bad-yaml",
        "not-a-mapping",
        "empty",
        "bad-id",
        "path-not-id",
        "missing-id",
        "missing-profiles",
        "adapter-in-no-bundle",
        "missing-field",
        "bad-extends",
    ],
)
def test_append_only_rejects(catalog: Catalog, document: str, code: ErrorCode, field: str) -> None:
    error = _raises(code, catalog.with_model_document, document)
    assert error.field == field
    assert (
        error.spec.http_status
        == {
            ErrorCode.CONFIG_CONFLICT: 409,
            ErrorCode.INVALID_INPUT: 400,
            ErrorCode.CONFIG_INVALID: 422,
        }[code]
    )


def test_unknown_profile_fields_are_warnings(catalog: Catalog) -> None:
    _, result = catalog.with_model_document(
        _doc(
            {"p": {"adapter_path": ST, "max_batch_tokens": 8, "compute_precison": "fp16"}}, sie_id="acme/typo"
        )
    )
    assert result.created_profiles == ("p",)
    assert any("compute_precison" in w for w in result.warnings)


def test_differing_descriptive_fields_warn_and_keep_stored(catalog: Catalog) -> None:
    updated, result = catalog.with_model_document(
        _doc({"tiny": {"extends": "default", "max_batch_tokens": 8}}, tasks=["encode"])
    )
    assert any("tasks" in w for w in result.warnings)
    assert updated.model(GLINER_MODEL_ID).tasks == ("extract",)


# --- export and documents -----------------------------------------------------------


def test_export_is_json_and_complete(catalog: Catalog) -> None:
    snapshot = json.loads(json.dumps(catalog.export()))
    assert [b["name"] for b in snapshot["bundles"]] == ["gliner", "default", "full"]
    assert {m["sie_id"] for m in snapshot["models"]} == {MINILM_MODEL_ID, RERANKER_MODEL_ID, GLINER_MODEL_ID}
    assert snapshot["bundle_config_hashes"]["default"] == catalog.bundle_config_hash("default")
    assert all(m["source"] == "builtin" for m in snapshot["models"])


def test_bundle_yaml_and_bundles_hash(catalog: Catalog) -> None:
    assert yaml.safe_load(catalog.bundle_yaml("gliner")) == {
        "name": "gliner",
        "priority": 50,
        "adapters": ["sie_server.adapters.gliner"],
    }
    assert catalog.bundle_yaml("nope") is None
    assert catalog.bundles_hash() == load_catalog().bundles_hash()
    updated, _ = catalog.with_model_document(_doc({"tiny": {"extends": "default", "max_batch_tokens": 8}}))
    assert updated.bundles_hash() != catalog.bundles_hash()


def test_canonical_yaml_of_unknown_model_is_not_found(catalog: Catalog) -> None:
    _raises(ErrorCode.MODEL_NOT_FOUND, catalog.canonical_model_yaml, "acme/none")


def test_models_for_bundle_flattens_a_child_whose_parent_is_not_routable() -> None:
    bundles = [b for b in load_catalog().bundles]
    model = parse_model_document(
        {
            "sie_id": "acme/mixed",
            "profiles": {
                "dense": {
                    "adapter_path": ST,
                    "max_batch_tokens": 64,
                    "adapter_options": {"runtime": {"a": 1}},
                },
                "rerank": {
                    "extends": "dense",
                    "adapter_path": "sie_server.adapters.cross_encoder:CrossEncoderAdapter",
                },
            },
        },
        source=ConfigSource.API,
        origin="t",
    )
    catalog = Catalog(bundles, [model])
    (only,) = [m for m in catalog.models_for_bundle("full") if m.sie_id == "acme/mixed"]
    assert list(only.profiles) == ["dense", "rerank"]
    assert catalog.bundles_for_profile("acme/mixed", "rerank") == ("full",)
    # If "full" did not ship sentence_transformer, the child would stand alone:
    from mesh.catalog.documents import restrict_profiles

    alone = restrict_profiles(model, ["rerank"])
    assert alone.declared["rerank"].extends is None
    assert alone.profiles["rerank"].fingerprint() == model.profiles["rerank"].fingerprint()
    reparsed = parse_model_document(alone.document(), source=ConfigSource.API, origin="t")
    assert reparsed.profiles["rerank"].fingerprint() == model.profiles["rerank"].fingerprint()


# --- loading files --------------------------------------------------------------------


def _write(directory: Path, name: str, content: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_load_from_files_with_overrides(tmp_path: Path) -> None:
    bundles, models = tmp_path / "bundles", tmp_path / "models"
    _write(
        bundles,
        "custom.yaml",
        {"name": "custom", "priority": 10, "adapters": ["acme.adapters.custom"], "image": "acme:1"},
    )
    _write(
        bundles, "default.yml", {"name": "default", "adapters": ["sie_server.adapters.sentence_transformer"]}
    )
    _write(bundles, "notes.txt", "ignored: not yaml suffix")
    _write(
        models,
        "custom.yaml",
        {
            "sie_id": "acme/custom",
            "profiles": {"default": {"adapter_path": "acme.adapters.custom:C", "max_batch_tokens": 4}},
        },
    )
    catalog = load_catalog(bundles, models)
    assert [b.name for b in catalog.bundles] == ["custom", "gliner", "default", "full"]
    assert catalog.bundle("default").source is ConfigSource.FILESYSTEM
    assert catalog.bundle("custom").document()["image"] == "acme:1"
    assert catalog.model("acme/custom").source is ConfigSource.FILESYSTEM
    assert catalog.resolve("acme/custom").bundles == ("custom",)
    # The override kept default's routable set, so its hash is still the vector.
    assert (
        catalog.bundle_config_hash("default")
        == "b34bdac36fb2882c67587534f9ba43f68278654b1513b5d5d820b979cf902ac4"
    )


def test_load_without_builtins(tmp_path: Path) -> None:
    bundles = tmp_path / "b"
    _write(bundles, "only.yaml", {"name": "only", "adapters": ["sie_server.adapters.sentence_transformer"]})
    catalog = load_catalog(bundles, None, include_builtin=False)
    assert [b.name for b in catalog.bundles] == ["only"]
    assert catalog.models == ()
    assert load_catalog(include_builtin=False).bundles == ()


def test_builtin_profiles_without_a_bundle_are_pruned_with_a_warning(tmp_path: Path) -> None:
    bundles = tmp_path / "b"
    # Replace "full" and "gliner" so nothing ships the cross-encoder or gliner adapters.
    _write(bundles, "full.yaml", {"name": "full", "adapters": ["sie_server.adapters.sentence_transformer"]})
    _write(
        bundles, "gliner.yaml", {"name": "gliner", "adapters": ["sie_server.adapters.sentence_transformer"]}
    )
    catalog = load_catalog(bundles)
    assert catalog.model(RERANKER_MODEL_ID) is None
    assert catalog.model(GLINER_MODEL_ID) is None
    assert len(catalog.warnings) == 2


@pytest.mark.parametrize(
    ("kind", "content", "field_or_text"),
    [
        ("bundles", "name: [unclosed", "invalid YAML"),
        ("bundles", "", "empty document"),
        ("bundles", {"priority": 1, "adapters": []}, "name"),
        ("bundles", {"name": "x"}, "adapters"),
        ("bundles", {"name": "x", "priority": "high", "adapters": []}, "priority"),
        ("bundles", {"name": "x", "adapters": ["pkg.mod:Class"]}, "adapters[0]"),
        ("bundles", {"name": "bad name", "adapters": []}, "name"),
        ("models", "sie_id: a/b\nprofiles: {default: {adapter_path: x.y:Z", "invalid YAML"),
        ("models", ["not", "a", "mapping"], "must be a mapping"),
        ("models", {"profiles": {}}, "sie_id"),
        ("models", {"sie_id": "a/b"}, "profiles"),
        ("models", {"sie_id": "a/b", "profiles": {"p": {"adapter_path": ST}}}, "profiles.p.max_batch_tokens"),
        (
            "models",
            {
                "sie_id": "a/b",
                "profiles": {"p": {"adapter_path": "nobody.ships:This", "max_batch_tokens": 1}},
            },
            "profiles.p.adapter_path",
        ),
        ("models", {"sie_id": "a/b", "revision": "x", "hf_revision": "y", "profiles": {}}, "hf_revision"),
        (
            "models",
            {
                "sie_id": "a/b",
                "profiles": {
                    "p": {
                        "adapter_path": ST,
                        "max_batch_tokens": 1,
                        "adapter_options": {"runtime": {"when": "2024-01-01"}},
                    }
                },
                "tasks": [float("nan")],
            },
            "tasks",
        ),
    ],
)
def test_bad_files_are_config_invalid_naming_the_file(
    tmp_path: Path, kind: str, content: object, field_or_text: str
) -> None:
    path = _write(tmp_path / kind, "broken.yaml", content)
    kwargs = {"bundles_dir": tmp_path / kind} if kind == "bundles" else {"models_dir": tmp_path / kind}
    error = _raises(ErrorCode.CONFIG_INVALID, load_catalog, **kwargs)
    assert str(path) in error.message
    assert field_or_text in error.message


def test_yaml_dates_are_not_json(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "m",
        "d.yaml",
        "sie_id: a/b\ntasks: [2024-01-01]\nprofiles: {p: {adapter_path: 'x.y:Z', max_batch_tokens: 1}}\n",
    )
    error = _raises(ErrorCode.CONFIG_INVALID, load_catalog, models_dir=tmp_path / "m")
    assert str(path) in error.message and "tasks[0]" in error.message


def test_duplicates_across_files_name_both(tmp_path: Path) -> None:
    first = _write(
        tmp_path / "m",
        "a.yaml",
        {"sie_id": "acme/x", "profiles": {"p": {"adapter_path": ST, "max_batch_tokens": 1}}},
    )
    second = _write(
        tmp_path / "m",
        "b.yaml",
        {"sie_id": "ACME/X", "profiles": {"p": {"adapter_path": ST, "max_batch_tokens": 1}}},
    )
    error = _raises(ErrorCode.CONFIG_INVALID, load_catalog, models_dir=tmp_path / "m")
    assert str(first) in error.message and str(second) in error.message


def test_missing_directory_is_config_invalid(tmp_path: Path) -> None:
    error = _raises(ErrorCode.CONFIG_INVALID, load_catalog, bundles_dir=tmp_path / "absent")
    assert str(tmp_path / "absent") in error.message
