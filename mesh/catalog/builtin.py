"""The catalog a mesh has with no config files, so `mesh up` works out of the box.

Bundles (lower priority number wins):

| bundle    | priority | adapters                                    | why it exists              |
|-----------|----------|---------------------------------------------|----------------------------|
| `gliner`  | 50       | gliner                                      | specialised for extraction |
| `default` | 100      | sentence_transformer                        | the stock embedding image  |
| `full`    | 200      | sentence_transformer, cross_encoder, gliner | catch-all, the last resort |

Models:

- `sentence-transformers/all-MiniLM-L6-v2` (encode): exactly the reference's
  config-hash test vector, so `default`'s hash is
  b34bdac36fb2882c67587534f9ba43f68278654b1513b5d5d820b979cf902ac4 — keep
  `default`'s routable set to this one profile or that identity breaks.
  Resolves to `default`, then `full`.
- `cross-encoder/ms-marco-MiniLM-L-6-v2` (score): only `full` serves it.
- `urchade/gliner_multi-v2.1` (extract): resolves to `gliner`, then `full`;
  its `high-recall` profile `extends` `default` and replaces the runtime block.

The documents go through the same parser as files and API posts, so the
built-ins cannot drift from what validation accepts.
"""

from __future__ import annotations

from typing import Any

from mesh.catalog.documents import (
    BundleConfig,
    ConfigSource,
    ModelConfig,
    parse_bundle_document,
    parse_model_document,
)

MINILM_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
RERANKER_MODEL_ID = "cross-encoder/ms-marco-MiniLM-L-6-v2"
GLINER_MODEL_ID = "urchade/gliner_multi-v2.1"
DEFAULT_BUNDLE_CONFIG_HASH = "b34bdac36fb2882c67587534f9ba43f68278654b1513b5d5d820b979cf902ac4"

_ORIGIN = "builtin"

BUILTIN_BUNDLE_DOCUMENTS: tuple[dict[str, Any], ...] = (
    {"name": "gliner", "priority": 50, "adapters": ["sie_server.adapters.gliner"]},
    {"name": "default", "priority": 100, "adapters": ["sie_server.adapters.sentence_transformer"]},
    {
        "name": "full",
        "priority": 200,
        "adapters": [
            "sie_server.adapters.sentence_transformer",
            "sie_server.adapters.cross_encoder",
            "sie_server.adapters.gliner",
        ],
    },
)

BUILTIN_MODEL_DOCUMENTS: tuple[dict[str, Any], ...] = (
    {
        "sie_id": MINILM_MODEL_ID,
        "revision": "1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
        "inputs": ["text"],
        "tasks": ["encode"],
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
    },
    {
        "sie_id": RERANKER_MODEL_ID,
        "inputs": ["text"],
        "tasks": ["score"],
        "profiles": {
            "default": {
                "adapter_path": "sie_server.adapters.cross_encoder:CrossEncoderAdapter",
                "max_batch_tokens": 8192,
                "compute_precision": "float16",
                "adapter_options": {"runtime": {"activation": "sigmoid"}},
            }
        },
    },
    {
        "sie_id": GLINER_MODEL_ID,
        "inputs": ["text"],
        "tasks": ["extract"],
        "profiles": {
            "default": {
                "adapter_path": "sie_server.adapters.gliner:GLiNERAdapter",
                "max_batch_tokens": 8192,
                "adapter_options": {"runtime": {"threshold": 0.5, "flat_ner": True}},
            },
            "high-recall": {
                "extends": "default",
                "adapter_options": {"runtime": {"threshold": 0.3, "flat_ner": True}},
            },
        },
    },
)


def builtin_bundles() -> list[BundleConfig]:
    return [
        parse_bundle_document(doc, source=ConfigSource.BUILTIN, origin=_ORIGIN)
        for doc in BUILTIN_BUNDLE_DOCUMENTS
    ]


def builtin_models() -> list[ModelConfig]:
    return [
        parse_model_document(doc, source=ConfigSource.BUILTIN, origin=_ORIGIN)
        for doc in BUILTIN_MODEL_DOCUMENTS
    ]
