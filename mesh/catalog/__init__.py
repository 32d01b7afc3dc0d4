"""Model and bundle configuration: what can run where.

- `parse_model_path` reads `[bundle:/]org/model[:profile]`.
- `load_catalog` builds an immutable `Catalog` from the built-ins plus YAML files.
- `Catalog.resolve` turns a model path into the bundles that can serve it.
- `Catalog.with_model_document` is the append-only Config API write.
- `Catalog.bundle_config_hash` is the hash workers report to ACK a config.

Pure code: only `load_catalog` touches the filesystem.
"""

from mesh.catalog.builtin import (
    DEFAULT_BUNDLE_CONFIG_HASH,
    GLINER_MODEL_ID,
    MINILM_MODEL_ID,
    RERANKER_MODEL_ID,
)
from mesh.catalog.catalog import AddResult, Catalog, Resolution, load_catalog
from mesh.catalog.config_hash import config_hash
from mesh.catalog.documents import (
    DEFAULT_BUNDLE_PRIORITY,
    BundleConfig,
    ConfigSource,
    ModelConfig,
    Profile,
    ProfileSpec,
    adapter_module,
    parse_bundle_document,
    parse_model_document,
)
from mesh.catalog.model_path import ModelPath, parse_model_path

__all__ = [
    "DEFAULT_BUNDLE_CONFIG_HASH",
    "DEFAULT_BUNDLE_PRIORITY",
    "GLINER_MODEL_ID",
    "MINILM_MODEL_ID",
    "RERANKER_MODEL_ID",
    "AddResult",
    "BundleConfig",
    "Catalog",
    "ConfigSource",
    "ModelConfig",
    "ModelPath",
    "Profile",
    "ProfileSpec",
    "Resolution",
    "adapter_module",
    "config_hash",
    "load_catalog",
    "parse_bundle_document",
    "parse_model_document",
    "parse_model_path",
]
