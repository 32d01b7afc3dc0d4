"""Bundle and model configuration documents: parsing, validation, `extends`.

A document arrives as YAML (or JSON, which YAML reads too) from a file, the
Config API or the shared store. Parsing turns it into frozen dataclasses and
reports every problem as MeshError(CONFIG_INVALID) naming where it came from
(`origin`: a file path, "api", "builtin") and the field at fault. Nothing here
reads files; `catalog.load_catalog` does.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mesh.catalog.model_path import is_valid_model_id, is_valid_name
from mesh.errors import ErrorCode, MeshError

DEFAULT_BUNDLE_PRIORITY = 100
_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_ADAPTER_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*")

_MODEL_KEYS = ("sie_id", "hf_id", "revision", "hf_revision", "inputs", "tasks", "profiles")
_PROFILE_KEYS = ("adapter_path", "max_batch_tokens", "compute_precision", "adapter_options", "extends")
_OPTION_BLOCKS = ("loadtime", "runtime")
_BUNDLE_KEYS = ("name", "priority", "adapters")

EMPTY_OPTIONS: Mapping[str, Any] = types.MappingProxyType({})


def _empty_options() -> Mapping[str, Any]:
    # dataclasses refuse an unhashable default; one shared read-only empty mapping is safe.
    return EMPTY_OPTIONS


class ConfigSource(str, enum.Enum):
    """Where a bundle or model configuration came from."""

    BUILTIN = "builtin"
    FILESYSTEM = "filesystem"
    API = "api"


def config_invalid(origin: str, field_path: str, why: str) -> MeshError:
    """The one shape of a validation failure: origin and field named, never a traceback."""
    where = f"{origin}: {field_path}" if field_path else origin
    return MeshError(ErrorCode.CONFIG_INVALID, f"{where}: {why}", field=field_path)


# --- immutable JSON values -------------------------------------------------
# Adapter options are arbitrary JSON. They are frozen (mappings become
# read-only proxies, lists tuples) so a Catalog can be shared across tasks
# without anyone mutating a neighbour's view, and thawed back for hashing and
# export.


def freeze_json(value: Any, origin: str, field_path: str) -> Any:
    """A deep read-only copy of a JSON value; CONFIG_INVALID for anything not JSON."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise config_invalid(origin, field_path, "must be a finite number")
        return value
    if isinstance(value, Mapping):
        frozen: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise config_invalid(origin, field_path, f"keys must be strings, got {key!r}")
            frozen[key] = freeze_json(item, origin, f"{field_path}.{key}")
        return types.MappingProxyType(frozen)
    if isinstance(value, (list, tuple)):
        return tuple(freeze_json(item, origin, f"{field_path}[{i}]") for i, item in enumerate(value))
    raise config_invalid(origin, field_path, f"unsupported value of type {type(value).__name__}")


def thaw_json(value: Any) -> Any:
    """Plain dicts and lists again, for json.dumps and yaml.safe_dump."""
    if isinstance(value, Mapping):
        return {key: thaw_json(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw_json(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces: the byte form hashes and comparisons use."""
    return json.dumps(thaw_json(value), sort_keys=True, separators=(",", ":"))


# --- bundles ----------------------------------------------------------------


@dataclass(frozen=True)
class BundleConfig:
    """A bundle: a worker image flavour and the adapter modules it ships."""

    name: str
    """Bundle id, as workers report it in their Hello."""
    priority: int = DEFAULT_BUNDLE_PRIORITY
    """Lower wins when several bundles can serve a profile."""
    adapters: tuple[str, ...] = ()
    """Python module paths of the adapters the bundle ships (`pkg.mod`, no class)."""
    source: ConfigSource = ConfigSource.BUILTIN
    """Where the bundle was defined."""
    extra: Mapping[str, Any] = field(default_factory=_empty_options)
    """Document keys the mesh does not interpret, kept so the YAML round-trips."""

    @property
    def bundle_id(self) -> str:
        """The Config API's name for `name`."""
        return self.name

    def serves_adapter(self, adapter_path: str) -> bool:
        """True when the adapter's module (`pkg.mod` of `pkg.mod:Class`) ships in this bundle."""
        return adapter_module(adapter_path) in self.adapters

    def document(self) -> dict[str, Any]:
        """The bundle as a plain YAML/JSON document."""
        doc: dict[str, Any] = {"name": self.name, "priority": self.priority, "adapters": list(self.adapters)}
        doc.update(thaw_json(self.extra))
        return doc


def adapter_module(adapter_path: str) -> str:
    """`pkg.mod:Class` -> `pkg.mod`: the unit bundles list."""
    return adapter_path.partition(":")[0]


def _require_mapping(value: Any, origin: str, field_path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise config_invalid(origin, field_path, f"must be a mapping, got {type(value).__name__}")
    return value


def _optional_str(doc: Mapping[str, Any], key: str, origin: str, prefix: str = "") -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise config_invalid(origin, prefix + key, "must be a non-empty string")
    return value


def _positive_int(value: Any, origin: str, field_path: str) -> int:
    # bool is an int in Python; `true` is not a token budget.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise config_invalid(origin, field_path, f"must be a positive integer, got {value!r}")
    return value


def parse_bundle_document(data: Any, *, source: ConfigSource, origin: str) -> BundleConfig:
    """Validate a loaded bundle document (`name`, `priority`, `adapters`)."""
    doc = _require_mapping(data, origin, "")
    name = doc.get("name")
    if name is None:
        raise config_invalid(origin, "name", "missing")
    if not isinstance(name, str) or not is_valid_name(name):
        raise config_invalid(origin, "name", f"must be a name of [A-Za-z0-9_.-], got {name!r}")
    priority = doc.get("priority", DEFAULT_BUNDLE_PRIORITY)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise config_invalid(origin, "priority", f"must be an integer, got {priority!r}")
    adapters_value = doc.get("adapters")
    if adapters_value is None:
        raise config_invalid(origin, "adapters", "missing")
    if not isinstance(adapters_value, list):
        raise config_invalid(origin, "adapters", "must be a list of python module paths")
    adapters: list[str] = []
    for i, module in enumerate(adapters_value):
        if not isinstance(module, str) or not _MODULE_PATH.fullmatch(module):
            raise config_invalid(
                origin, f"adapters[{i}]", f"must be a python module path like pkg.mod, got {module!r}"
            )
        if module not in adapters:
            adapters.append(module)
    extra = {key: value for key, value in doc.items() if key not in _BUNDLE_KEYS}
    return BundleConfig(
        name=name,
        priority=priority,
        adapters=tuple(adapters),
        source=source,
        extra=freeze_json(extra, origin, "") if extra else EMPTY_OPTIONS,
    )


# --- model profiles ---------------------------------------------------------


@dataclass(frozen=True)
class ProfileSpec:
    """A profile as the document declares it; None means "inherit" under `extends`."""

    name: str
    """Profile name, unique within the model."""
    adapter_path: str | None = None
    """`pkg.mod:Class` of the adapter that runs the model."""
    max_batch_tokens: int | None = None
    """Token budget of one batch on the worker."""
    compute_precision: str | None = None
    """e.g. `float16`; None for the adapter's default."""
    loadtime: Mapping[str, Any] | None = None
    """Adapter options applied when loading; None when the document has no block."""
    runtime: Mapping[str, Any] | None = None
    """Adapter options applied per request; None when the document has no block."""
    extends: str | None = None
    """Name of the profile this one inherits from."""

    def document(self) -> dict[str, Any]:
        """The profile as declared, for YAML output (absent fields stay absent)."""
        doc: dict[str, Any] = {}
        if self.extends is not None:
            doc["extends"] = self.extends
        if self.adapter_path is not None:
            doc["adapter_path"] = self.adapter_path
        if self.max_batch_tokens is not None:
            doc["max_batch_tokens"] = self.max_batch_tokens
        if self.compute_precision is not None:
            doc["compute_precision"] = self.compute_precision
        options = {
            block: thaw_json(value)
            for block, value in (("loadtime", self.loadtime), ("runtime", self.runtime))
            if value is not None
        }
        if options:
            doc["adapter_options"] = options
        return doc


@dataclass(frozen=True)
class Profile:
    """A profile with `extends` resolved: exactly what a worker runs."""

    name: str
    """Profile name."""
    adapter_path: str
    """`pkg.mod:Class` of the adapter."""
    max_batch_tokens: int
    """Token budget of one batch."""
    compute_precision: str | None = None
    """e.g. `float16`; None for the adapter's default."""
    loadtime: Mapping[str, Any] = field(default_factory=_empty_options)
    """Load-time adapter options after inheritance."""
    runtime: Mapping[str, Any] = field(default_factory=_empty_options)
    """Per-request adapter options after inheritance."""
    extends: str = ""
    """The parent profile it was resolved from; "" for a root profile."""

    @property
    def adapter_module(self) -> str:
        """The module bundles must ship for this profile to route to them."""
        return adapter_module(self.adapter_path)

    def hash_config(self) -> dict[str, Any]:
        """The `config` object of the bundle config hash (reference algorithm).

        Empty option blocks are dropped and `adapter_options` is null when no
        block with content remains, so "no options" hashes the same however it
        was written.
        """
        options = {
            block: thaw_json(value)
            for block, value in (("loadtime", self.loadtime), ("runtime", self.runtime))
            if value
        }
        return {
            "adapter_path": self.adapter_path,
            "max_batch_tokens": self.max_batch_tokens,
            "compute_precision": self.compute_precision,
            "adapter_options": options or None,
        }

    def fingerprint(self) -> str:
        """Canonical JSON of what the profile runs; equal fingerprints = identical profiles.

        Compared as text because `True == 1` in Python, while to a worker
        `normalize: true` and `normalize: 1` are different documents.
        """
        return canonical_json(self.hash_config())


def _parse_options(value: Any, origin: str, field_path: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    _require_mapping(value, origin, field_path)
    return freeze_json(value, origin, field_path)


def parse_profile_spec(name: str, data: Any, origin: str, warnings: list[str]) -> ProfileSpec:
    """Validate one declared profile. Unknown keys are ignored with a warning."""
    prefix = f"profiles.{name}."
    if not isinstance(name, str) or not is_valid_name(name):
        raise config_invalid(origin, f"profiles.{name}", "profile names must be of [A-Za-z0-9_.-]")
    doc = _require_mapping(data if data is not None else {}, origin, f"profiles.{name}")
    for key in doc:
        if key not in _PROFILE_KEYS:
            warnings.append(f"{origin}: {prefix}{key}: unknown profile field ignored")
    adapter_path = _optional_str(doc, "adapter_path", origin, prefix)
    if adapter_path is not None and not _ADAPTER_PATH.fullmatch(adapter_path):
        raise config_invalid(
            origin, prefix + "adapter_path", f"must look like pkg.mod:Class, got {adapter_path!r}"
        )
    max_batch_tokens = doc.get("max_batch_tokens")
    if max_batch_tokens is not None:
        max_batch_tokens = _positive_int(max_batch_tokens, origin, prefix + "max_batch_tokens")
    options = doc.get("adapter_options")
    loadtime = runtime = None
    if options is not None:
        options = _require_mapping(options, origin, prefix + "adapter_options")
        for key in options:
            if key not in _OPTION_BLOCKS:
                warnings.append(f"{origin}: {prefix}adapter_options.{key}: unknown option block ignored")
        loadtime = _parse_options(options.get("loadtime"), origin, prefix + "adapter_options.loadtime")
        runtime = _parse_options(options.get("runtime"), origin, prefix + "adapter_options.runtime")
    extends = doc.get("extends")
    if extends is not None and (not isinstance(extends, str) or not is_valid_name(extends)):
        raise config_invalid(origin, prefix + "extends", f"must name a profile, got {extends!r}")
    return ProfileSpec(
        name=name,
        adapter_path=adapter_path,
        max_batch_tokens=max_batch_tokens,
        compute_precision=_optional_str(doc, "compute_precision", origin, prefix),
        loadtime=loadtime,
        runtime=runtime,
        extends=extends,
    )


def resolve_profiles(specs: Mapping[str, ProfileSpec], origin: str) -> dict[str, Profile]:
    """Resolve `extends` chains: scalars inherit when absent; a non-empty child
    `loadtime` or `runtime` block replaces the parent's, an empty or absent one
    inherits it. Unknown parents and cycles are CONFIG_INVALID."""
    resolved: dict[str, Profile] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Profile:
        if name in resolved:
            return resolved[name]
        spec = specs[name]
        parent: Profile | None = None
        if spec.extends is not None:
            if spec.extends not in specs:
                raise config_invalid(origin, f"profiles.{name}.extends", f"unknown profile {spec.extends!r}")
            if spec.extends in chain:
                cycle = " -> ".join((*chain, spec.extends))
                raise config_invalid(origin, f"profiles.{name}.extends", f"cycle {cycle}")
            parent = resolve(spec.extends, (*chain, spec.extends))
        adapter_path = spec.adapter_path or (parent.adapter_path if parent else None)
        if adapter_path is None:
            raise config_invalid(origin, f"profiles.{name}.adapter_path", "missing")
        max_batch_tokens = spec.max_batch_tokens or (parent.max_batch_tokens if parent else None)
        if max_batch_tokens is None:
            raise config_invalid(origin, f"profiles.{name}.max_batch_tokens", "missing")
        profile = Profile(
            name=name,
            adapter_path=adapter_path,
            max_batch_tokens=max_batch_tokens,
            compute_precision=spec.compute_precision
            if spec.compute_precision is not None
            else (parent.compute_precision if parent else None),
            loadtime=spec.loadtime if spec.loadtime else (parent.loadtime if parent else EMPTY_OPTIONS),
            runtime=spec.runtime if spec.runtime else (parent.runtime if parent else EMPTY_OPTIONS),
            extends=spec.extends or "",
        )
        resolved[name] = profile
        return profile

    for name in sorted(specs):
        resolve(name, (name,))
    return {name: resolved[name] for name in sorted(resolved)}


# --- models -----------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """One model and its profiles; `profiles` is what routing and hashing use."""

    sie_id: str
    """Canonical model id (case as first written), e.g. `BAAI/bge-m3`."""
    profiles: Mapping[str, Profile]
    """Resolved profiles by name, sorted by name."""
    declared: Mapping[str, ProfileSpec]
    """Profiles as the documents declared them (with `extends`), sorted by name."""
    hf_id: str | None = None
    """Hugging Face repo the weights come from, when it differs from `sie_id`."""
    revision: str | None = None
    """Pinned weights revision (`revision` or `hf_revision` in the document)."""
    inputs: Any = None
    """Input modalities, free-form to the mesh (e.g. `[text]`)."""
    tasks: Any = None
    """Operations the model serves, free-form to the mesh (e.g. `[encode]`)."""
    source: ConfigSource = ConfigSource.BUILTIN
    """Where it came from; `api` once any profile was added through the Config API."""
    extra: Mapping[str, Any] = field(default_factory=_empty_options)
    """Document keys the mesh does not interpret, kept so the YAML round-trips."""

    @property
    def model_id(self) -> str:
        """The Config API's name for `sie_id`."""
        return self.sie_id

    @property
    def key(self) -> str:
        """Case-folded id: model ids resolve case-insensitively."""
        return self.sie_id.lower()

    def default_profile(self) -> str:
        """`default` when present, else the first profile by name."""
        if "default" in self.profiles:
            return "default"
        return next(iter(self.profiles))

    def document(self) -> dict[str, Any]:
        """The model as a plain YAML/JSON document (declared profiles, `extends` kept)."""
        doc: dict[str, Any] = {"sie_id": self.sie_id}
        if self.hf_id is not None:
            doc["hf_id"] = self.hf_id
        if self.revision is not None:
            doc["revision"] = self.revision
        if self.inputs is not None:
            doc["inputs"] = thaw_json(self.inputs)
        if self.tasks is not None:
            doc["tasks"] = thaw_json(self.tasks)
        doc.update(thaw_json(self.extra))
        doc["profiles"] = {name: spec.document() for name, spec in self.declared.items()}
        return doc

    def hash_entry(self, profile_names: Iterable[str]) -> dict[str, Any]:
        """This model's element of a bundle's config-hash list, for the given profiles."""
        return {
            "sie_id": self.sie_id,
            "revision": self.revision,
            "profiles": [
                {"name": name, "config": self.profiles[name].hash_config()} for name in sorted(profile_names)
            ],
        }


@dataclass(frozen=True)
class ModelDocument:
    """A validated model document before `extends` is resolved.

    Kept separate from ModelConfig because an appended profile may extend a
    profile that only the stored config has: resolution has to wait for the
    merge.
    """

    sie_id: str
    """Model id as written."""
    declared: Mapping[str, ProfileSpec]
    """Profiles as declared, by name."""
    hf_id: str | None = None
    """Hugging Face repo, when given."""
    revision: str | None = None
    """`revision` or `hf_revision`, when given."""
    inputs: Any = None
    """Free-form input modalities, when given."""
    tasks: Any = None
    """Free-form operations, when given."""
    extra: Mapping[str, Any] = field(default_factory=_empty_options)
    """Uninterpreted document keys."""


def read_model_document(data: Any, *, origin: str, warnings: list[str] | None = None) -> ModelDocument:
    """Validate a loaded model document's fields (CONFIG_INVALID naming origin and field);
    ignorable oddities (unknown profile fields) are appended to `warnings`."""
    sink: list[str] = warnings if warnings is not None else []
    doc = _require_mapping(data, origin, "")
    sie_id = doc.get("sie_id")
    if sie_id is None:
        raise config_invalid(origin, "sie_id", "missing")
    if not isinstance(sie_id, str) or not is_valid_model_id(sie_id):
        raise config_invalid(origin, "sie_id", f"not a model id like org/model: {sie_id!r}")
    revision = _optional_str(doc, "revision", origin)
    hf_revision = _optional_str(doc, "hf_revision", origin)
    if revision is not None and hf_revision is not None and revision != hf_revision:
        raise config_invalid(
            origin, "hf_revision", f"disagrees with revision ({hf_revision!r} != {revision!r})"
        )
    profiles_value = doc.get("profiles")
    if profiles_value is None:
        raise config_invalid(origin, "profiles", "missing")
    profiles_doc = _require_mapping(profiles_value, origin, "profiles")
    if not profiles_doc:
        raise config_invalid(origin, "profiles", "at least one profile is required")
    declared = {name: parse_profile_spec(name, spec, origin, sink) for name, spec in profiles_doc.items()}
    extra = {key: value for key, value in doc.items() if key not in _MODEL_KEYS}
    return ModelDocument(
        sie_id=sie_id,
        declared=declared,
        hf_id=_optional_str(doc, "hf_id", origin),
        revision=revision if revision is not None else hf_revision,
        inputs=freeze_json(doc.get("inputs"), origin, "inputs"),
        tasks=freeze_json(doc.get("tasks"), origin, "tasks"),
        extra=freeze_json(extra, origin, "") if extra else EMPTY_OPTIONS,
    )


def build_model_config(document: ModelDocument, *, source: ConfigSource, origin: str) -> ModelConfig:
    """Resolve `extends` and freeze: the ModelConfig routing and hashing use."""
    ordered = {name: document.declared[name] for name in sorted(document.declared)}
    profiles = resolve_profiles(ordered, origin)
    return ModelConfig(
        sie_id=document.sie_id,
        profiles=types.MappingProxyType(profiles),
        declared=types.MappingProxyType(ordered),
        hf_id=document.hf_id,
        revision=document.revision,
        inputs=document.inputs,
        tasks=document.tasks,
        source=source,
        extra=document.extra,
    )


def parse_model_document(
    data: Any, *, source: ConfigSource, origin: str, warnings: list[str] | None = None
) -> ModelConfig:
    """Validate a loaded model document and resolve its profiles (CONFIG_INVALID on failure)."""
    return build_model_config(
        read_model_document(data, origin=origin, warnings=warnings), source=source, origin=origin
    )


def restrict_profiles(model: ModelConfig, names: Iterable[str]) -> ModelConfig:
    """The model with only `names` kept. A kept profile whose parent is dropped is
    flattened (its resolved content declared inline) so the document still
    parses and resolves to exactly the same profile."""
    keep = [name for name in model.profiles if name in set(names)]
    if len(keep) == len(model.profiles):
        return model
    declared: dict[str, ProfileSpec] = {}
    for name in keep:
        spec = model.declared[name]
        if spec.extends is not None and spec.extends not in keep:
            profile = model.profiles[name]
            spec = ProfileSpec(
                name=name,
                adapter_path=profile.adapter_path,
                max_batch_tokens=profile.max_batch_tokens,
                compute_precision=profile.compute_precision,
                loadtime=profile.loadtime or None,
                runtime=profile.runtime or None,
            )
        declared[name] = spec
    return dataclasses.replace(
        model,
        profiles=types.MappingProxyType({name: model.profiles[name] for name in keep}),
        declared=types.MappingProxyType(declared),
    )
