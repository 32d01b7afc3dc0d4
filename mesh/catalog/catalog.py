"""The immutable catalog of bundles and model configs, and model resolution.

A Catalog is a value: every change (`with_model_document`) returns a new one,
so a router swaps one reference per config epoch and a request in flight keeps
the snapshot it resolved against. Indexes (case-folded lookups, the bundles
each profile routes to) are built once per catalog, making `resolve` — which
runs per request — a parse plus a few dict lookups.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from mesh.catalog.builtin import builtin_bundles, builtin_models
from mesh.catalog.config_hash import config_hash
from mesh.catalog.documents import (
    BundleConfig,
    ConfigSource,
    ModelConfig,
    ModelDocument,
    Profile,
    build_model_config,
    canonical_json,
    config_invalid,
    parse_bundle_document,
    parse_model_document,
    read_model_document,
    restrict_profiles,
)
from mesh.catalog.model_path import is_valid_model_id, parse_model_path
from mesh.errors import ErrorCode, MeshError

_YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Resolution:
    """Where a model path can run."""

    model_id: str
    """The model id in its catalog (canonical) case."""
    profile: str
    """The profile chosen: explicit, else `default`, else the first by name."""
    bundles: tuple[str, ...]
    """Bundles to route to, preferred first: the override alone, else `compatible_bundles`."""
    compatible_bundles: tuple[str, ...]
    """Every bundle that can serve the profile, lowest priority number first."""
    config: Profile
    """The resolved profile (adapter, batch budget, options)."""
    bundle_override: str = ""
    """The `bundle:/` override in catalog case; "" when none was given."""

    @property
    def resolved_bundle(self) -> str:
        """The bundle routing prefers."""
        return self.bundles[0]


@dataclass(frozen=True)
class AddResult:
    """What an append-only model write did."""

    model_id: str
    """The model id in catalog case (an existing model keeps its first spelling)."""
    created_profiles: tuple[str, ...]
    """Profiles that are new in this write."""
    existing_profiles_skipped: tuple[str, ...]
    """Profiles that already existed with identical content."""
    warnings: tuple[str, ...] = ()
    """Things accepted but worth telling the author (ignored fields, kept stored values)."""

    @property
    def unchanged(self) -> bool:
        """True when nothing was written (every profile existed): the 200, not the 201."""
        return not self.created_profiles


def _bundle_index(bundles: Iterable[BundleConfig]) -> dict[str, BundleConfig]:
    index: dict[str, BundleConfig] = {}
    for bundle in bundles:
        key = bundle.name.lower()
        if key in index:
            raise config_invalid(bundle.source.value, "name", f"bundle {bundle.name!r} defined twice")
        index[key] = bundle
    return index


class Catalog:
    """Bundles and model configs; immutable. Build with `load_catalog` or `Catalog(...)`.

    Invariant: every profile of every model routes to at least one bundle, so
    `resolve` never returns an empty bundle list.
    """

    def __init__(
        self,
        bundles: Iterable[BundleConfig],
        models: Iterable[ModelConfig],
        *,
        warnings: Iterable[str] = (),
    ) -> None:
        self._bundle_by_key = _bundle_index(bundles)
        self._bundles = tuple(sorted(self._bundle_by_key.values(), key=lambda b: (b.priority, b.name)))
        model_by_key: dict[str, ModelConfig] = {}
        for model in models:
            if model.key in model_by_key:
                raise config_invalid(model.source.value, "sie_id", f"model {model.sie_id!r} defined twice")
            model_by_key[model.key] = model
        self._model_by_key = {key: model_by_key[key] for key in sorted(model_by_key)}
        self._models = tuple(self._model_by_key.values())
        routes: dict[tuple[str, str], tuple[str, ...]] = {}
        for model in self._models:
            for profile in model.profiles.values():
                serving = tuple(b.name for b in self._bundles if b.serves_adapter(profile.adapter_path))
                if not serving:
                    raise config_invalid(
                        model.source.value,
                        f"profiles.{profile.name}.adapter_path",
                        f"model {model.sie_id!r}: adapter module {profile.adapter_module!r} "
                        "is in no known bundle",
                    )
                routes[(model.key, profile.name)] = serving
        self._routes = routes
        self._warnings = tuple(warnings)

    # --- reads ---------------------------------------------------------------

    @property
    def bundles(self) -> tuple[BundleConfig, ...]:
        """All bundles, lowest priority number first (ties by name)."""
        return self._bundles

    @property
    def models(self) -> tuple[ModelConfig, ...]:
        """All models, ordered by case-folded id."""
        return self._models

    @property
    def warnings(self) -> tuple[str, ...]:
        """Non-fatal findings from loading (ignored fields, pruned built-in profiles)."""
        return self._warnings

    def bundle(self, bundle_id: str) -> BundleConfig | None:
        """The bundle, case-insensitively; None when unknown."""
        return self._bundle_by_key.get(bundle_id.lower())

    def model(self, model_id: str) -> ModelConfig | None:
        """The model, case-insensitively; None when unknown."""
        return self._model_by_key.get(model_id.lower())

    def bundles_for_profile(self, model_id: str, profile: str) -> tuple[str, ...]:
        """Bundles that can serve one profile, preferred first; () when unknown."""
        return self._routes.get((model_id.lower(), profile), ())

    def routable_bundles_by_profile(self, model_id: str) -> dict[str, tuple[str, ...]]:
        """For the Config API's reply: each profile of the model and its bundles."""
        model = self.model(model_id)
        if model is None:
            return {}
        return {name: self._routes[(model.key, name)] for name in model.profiles}

    def models_for_bundle(self, bundle_id: str) -> list[ModelConfig]:
        """The configs a worker of this bundle must hold: models restricted to the
        profiles routable to it (what the config hash covers). [] for an unknown bundle."""
        return list(self._models_by_bundle.get(bundle_id.lower(), ()))

    def bundle_config_hash(self, bundle_id: str) -> str:
        """The reference config hash of the bundle; "" when nothing routes to it or it is unknown."""
        return self._config_hashes.get(bundle_id.lower(), "")

    def bundle_config_hashes(self) -> dict[str, str]:
        """Every bundle's config hash, by bundle name."""
        return {bundle.name: self._config_hashes[bundle.name.lower()] for bundle in self._bundles}

    def bundles_hash(self) -> str:
        """One digest of every bundle's definition and config hash: equal on replicas that agree."""
        snapshot = [
            {
                "name": b.name,
                "priority": b.priority,
                "adapters": list(b.adapters),
                "config_hash": self.bundle_config_hash(b.name),
            }
            for b in self._bundles
        ]
        return hashlib.sha256(canonical_json(snapshot).encode("utf-8")).hexdigest()

    @cached_property
    def _models_by_bundle(self) -> Mapping[str, tuple[ModelConfig, ...]]:
        by_bundle: dict[str, list[ModelConfig]] = {bundle.name.lower(): [] for bundle in self._bundles}
        for model in self._models:
            for bundle in self._bundles:
                names = [name for name in model.profiles if bundle.name in self._routes[(model.key, name)]]
                if names:
                    by_bundle[bundle.name.lower()].append(restrict_profiles(model, names))
        return types.MappingProxyType({key: tuple(models) for key, models in by_bundle.items()})

    @cached_property
    def _config_hashes(self) -> Mapping[str, str]:
        return types.MappingProxyType(
            {
                key: config_hash((model, tuple(model.profiles)) for model in models)
                for key, models in self._models_by_bundle.items()
            }
        )

    # --- resolution ------------------------------------------------------------

    def resolve(self, model_path: str, profile: str = "") -> Resolution:
        """Resolve `[bundle:/]org/model[:profile]` (plus `options.profile`) to bundles.

        Raises MeshError with INVALID_INPUT (malformed path; unknown profile or a
        path suffix that disagrees with `profile`, field "profile"),
        MODEL_NOT_FOUND (unknown model) or BUNDLE_CONFLICT (the override bundle
        cannot serve the profile; `compatible_bundles` lists those that can).
        """
        path = parse_model_path(model_path)
        if path.profile and profile and path.profile != profile:
            raise MeshError(
                ErrorCode.INVALID_INPUT,
                f"profile {path.profile!r} in the model path disagrees with options.profile {profile!r}",
                field="profile",
            )
        model = self._model_by_key.get(path.model_id.lower())
        if model is None:
            raise MeshError(ErrorCode.MODEL_NOT_FOUND, f"model {path.model_id!r} is not in the catalog")
        chosen = path.profile or profile
        if chosen:
            if chosen not in model.profiles:
                raise MeshError(
                    ErrorCode.INVALID_INPUT,
                    f"model {model.sie_id!r} has no profile {chosen!r} "
                    f"(profiles: {', '.join(model.profiles)})",
                    field="profile",
                )
        else:
            chosen = model.default_profile()
        compatible = self._routes[(model.key, chosen)]
        override = ""
        bundles = compatible
        if path.bundle:
            bundle = self._bundle_by_key.get(path.bundle.lower())
            if bundle is None or bundle.name not in compatible:
                why = "is not a known bundle" if bundle is None else "cannot serve it"
                raise MeshError(
                    ErrorCode.BUNDLE_CONFLICT,
                    f"bundle {path.bundle!r} {why}; model {model.sie_id!r} profile {chosen!r} "
                    f"runs on: {', '.join(compatible)}",
                    compatible_bundles=compatible,
                    bundle=path.bundle,
                )
            override = bundle.name
            bundles = (bundle.name,)
        return Resolution(
            model_id=model.sie_id,
            profile=chosen,
            bundles=bundles,
            compatible_bundles=compatible,
            config=model.profiles[chosen],
            bundle_override=override,
        )

    # --- append-only writes ------------------------------------------------------

    def with_model_document(
        self, text: str, source: ConfigSource | str = ConfigSource.API
    ) -> tuple[Catalog, AddResult]:
        """Append a model YAML/JSON document: the Config API's write.

        New profiles are added; profiles identical (as resolved) to stored ones
        are skipped; a stored profile with different content, or a different
        `revision`/`hf_id` for a stored model, is CONFIG_CONFLICT (append-only:
        changing what workers already run needs a new profile name). Invalid
        YAML or model id is INVALID_INPUT; missing fields, an `extends` that
        does not resolve, or an adapter in no known bundle is CONFIG_INVALID.
        Returns this same catalog when nothing was created.
        """
        source = ConfigSource(source)
        origin = source.value
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise MeshError(
                ErrorCode.INVALID_INPUT, f"{origin}: invalid YAML/JSON: {error}", field="document"
            ) from None
        if not isinstance(data, Mapping):
            raise MeshError(
                ErrorCode.INVALID_INPUT, f"{origin}: a model document must be a mapping", field="document"
            )
        sie_id = data.get("sie_id")
        if sie_id is not None and (not isinstance(sie_id, str) or not is_valid_model_id(sie_id)):
            raise MeshError(ErrorCode.INVALID_INPUT, f"{origin}: invalid model id {sie_id!r}", field="sie_id")
        warnings: list[str] = []
        document = read_model_document(data, origin=origin, warnings=warnings)
        existing = self._model_by_key.get(document.sie_id.lower())
        if existing is None:
            model = build_model_config(document, source=source, origin=origin)
            created = tuple(model.profiles)
            skipped: tuple[str, ...] = ()
        else:
            model, created, skipped = _merge_model(existing, document, source, origin, warnings)
            if not created:
                return self, AddResult(existing.sie_id, (), skipped, tuple(warnings))
        for name in created:
            adapter = model.profiles[name]
            if not any(bundle.serves_adapter(adapter.adapter_path) for bundle in self._bundles):
                raise config_invalid(
                    origin,
                    f"profiles.{name}.adapter_path",
                    f"adapter module {adapter.adapter_module!r} is in no known bundle",
                )
        models = [m for m in self._models if m.key != model.key]
        models.append(model)
        catalog = Catalog(self._bundles, models, warnings=self._warnings)
        return catalog, AddResult(model.sie_id, created, skipped, tuple(warnings))

    # --- documents -----------------------------------------------------------------

    def canonical_model_yaml(self, model_id: str) -> str:
        """The stored form of a model (declared profiles, `extends` kept); MODEL_NOT_FOUND when unknown."""
        model = self.model(model_id)
        if model is None:
            raise MeshError(ErrorCode.MODEL_NOT_FOUND, f"model {model_id!r} is not in the catalog")
        return yaml.safe_dump(model.document(), sort_keys=False, default_flow_style=False)

    def bundle_yaml(self, bundle_id: str) -> str | None:
        """The bundle as YAML; None when unknown."""
        bundle = self.bundle(bundle_id)
        if bundle is None:
            return None
        return yaml.safe_dump(bundle.document(), sort_keys=False, default_flow_style=False)

    def export(self) -> dict[str, Any]:
        """A JSON-ready snapshot: bundles, models (with source) and every bundle's config hash."""
        return {
            "bundles": [{**bundle.document(), "source": bundle.source.value} for bundle in self._bundles],
            "models": [{**model.document(), "source": model.source.value} for model in self._models],
            "bundle_config_hashes": self.bundle_config_hashes(),
        }


def _merge_model(
    existing: ModelConfig,
    document: ModelDocument,
    source: ConfigSource,
    origin: str,
    warnings: list[str],
) -> tuple[ModelConfig, tuple[str, ...], tuple[str, ...]]:
    """Append `document`'s profiles to a stored model; (merged, created, skipped)."""
    for field_name in ("revision", "hf_id"):
        incoming, stored = getattr(document, field_name), getattr(existing, field_name)
        if incoming is not None and incoming != stored:
            # Both feed what every existing profile loads: changing them would
            # silently change profiles the append-only rule protects.
            raise MeshError(
                ErrorCode.CONFIG_CONFLICT,
                f"{origin}: model {existing.sie_id!r} is stored with {field_name} {stored!r}, "
                f"not {incoming!r}",
                field=field_name,
            )
    for field_name in ("inputs", "tasks"):
        incoming = getattr(document, field_name)
        if incoming is not None and canonical_json(incoming) != canonical_json(getattr(existing, field_name)):
            warnings.append(
                f"{origin}: {field_name} differs from the stored config; the stored value is kept"
            )
    if document.sie_id != existing.sie_id:
        warnings.append(
            f"{origin}: model id {document.sie_id!r} matches stored {existing.sie_id!r}; "
            "the stored spelling is kept"
        )

    # Resolve the incoming profiles in the context of the stored ones (they may
    # extend a stored profile), then compare what each would run.
    candidate = dict(existing.declared)
    candidate.update(document.declared)
    resolved = build_model_config(
        dataclasses.replace(document, sie_id=existing.sie_id, declared=candidate),
        source=source,
        origin=origin,
    ).profiles
    created: list[str] = []
    skipped: list[str] = []
    for name in sorted(document.declared):
        if name not in existing.profiles:
            created.append(name)
        elif resolved[name].fingerprint() == existing.profiles[name].fingerprint():
            skipped.append(name)
        else:
            raise MeshError(
                ErrorCode.CONFIG_CONFLICT,
                f"{origin}: model {existing.sie_id!r} profile {name!r} exists with different content; "
                "profiles are append-only, add a new profile name instead",
                field=f"profiles.{name}",
            )
    if not created:
        return existing, (), tuple(skipped)
    merged_declared = dict(existing.declared)
    merged_declared.update({name: document.declared[name] for name in created})
    merged = build_model_config(
        ModelDocument(
            sie_id=existing.sie_id,
            declared=merged_declared,
            hf_id=existing.hf_id,
            revision=existing.revision,
            inputs=existing.inputs,
            tasks=existing.tasks,
            extra=existing.extra,
        ),
        # A model the API has touched is no longer described by files alone.
        source=ConfigSource.API if source is ConfigSource.API else existing.source,
        origin=origin,
    )
    return merged, tuple(created), tuple(skipped)


# --- loading ---------------------------------------------------------------------


def _yaml_files(directory: Path, what: str) -> list[Path]:
    if not directory.is_dir():
        raise MeshError(
            ErrorCode.CONFIG_INVALID, f"{directory}: {what} directory does not exist or is not a directory"
        )
    return sorted(p for p in directory.iterdir() if p.suffix in _YAML_SUFFIXES and p.is_file())


def _read_yaml_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise MeshError(ErrorCode.CONFIG_INVALID, f"{path}: cannot read: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise MeshError(ErrorCode.CONFIG_INVALID, f"{path}: invalid YAML: {error}") from None
    if data is None:
        raise MeshError(ErrorCode.CONFIG_INVALID, f"{path}: empty document")
    return data


def load_catalog(
    bundles_dir: Path | None = None,
    models_dir: Path | None = None,
    *,
    include_builtin: bool = True,
) -> Catalog:
    """Build a catalog from the built-ins plus `*.yaml`/`*.yml` files.

    A file's bundle or model replaces a built-in one of the same name (files
    are how an operator overrides); two files defining the same one are an
    error. Built-in profiles whose adapter no bundle ships any more (an
    operator replaced `default`, say) are dropped with a warning rather than
    failing the load; the same in a file is CONFIG_INVALID. Every failure is
    MeshError(CONFIG_INVALID) naming the file and the field.
    """
    warnings: list[str] = []
    bundles: dict[str, BundleConfig] = {}
    bundle_files: dict[str, Path] = {}
    if include_builtin:
        bundles.update((bundle.name.lower(), bundle) for bundle in builtin_bundles())
    if bundles_dir is not None:
        for path in _yaml_files(Path(bundles_dir), "bundles"):
            bundle = parse_bundle_document(
                _read_yaml_file(path), source=ConfigSource.FILESYSTEM, origin=str(path)
            )
            key = bundle.name.lower()
            if key in bundle_files:
                raise config_invalid(
                    str(path), "name", f"bundle {bundle.name!r} is also defined in {bundle_files[key]}"
                )
            bundle_files[key] = path
            bundles[key] = bundle

    models: dict[str, ModelConfig] = {}
    model_files: dict[str, Path] = {}
    if include_builtin:
        for model in builtin_models():
            pruned = _prune_unroutable(model, bundles.values(), warnings)
            if pruned is not None:
                models[model.key] = pruned
    if models_dir is not None:
        for path in _yaml_files(Path(models_dir), "models"):
            origin = str(path)
            model = parse_model_document(
                _read_yaml_file(path), source=ConfigSource.FILESYSTEM, origin=origin, warnings=warnings
            )
            if model.key in model_files:
                raise config_invalid(
                    origin, "sie_id", f"model {model.sie_id!r} is also defined in {model_files[model.key]}"
                )
            for profile in model.profiles.values():
                if not any(bundle.serves_adapter(profile.adapter_path) for bundle in bundles.values()):
                    raise config_invalid(
                        origin,
                        f"profiles.{profile.name}.adapter_path",
                        f"adapter module {profile.adapter_module!r} is in no known bundle",
                    )
            model_files[model.key] = path
            models[model.key] = model
    return Catalog(bundles.values(), models.values(), warnings=warnings)


def _prune_unroutable(
    model: ModelConfig, bundles: Iterable[BundleConfig], warnings: list[str]
) -> ModelConfig | None:
    bundle_list = list(bundles)
    keep = [
        name
        for name, profile in model.profiles.items()
        if any(bundle.serves_adapter(profile.adapter_path) for bundle in bundle_list)
    ]
    if len(keep) == len(model.profiles):
        return model
    dropped = sorted(set(model.profiles) - set(keep))
    warnings.append(
        f"builtin: model {model.sie_id!r} profiles {dropped} dropped: no bundle ships their adapter"
    )
    if not keep:
        return None
    return restrict_profiles(model, keep)
