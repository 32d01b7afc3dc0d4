"""Model documents the Config API tests post, and small helpers they share."""

from __future__ import annotations

import yaml

from mesh.catalog.builtin import BUILTIN_MODEL_DOCUMENTS, MINILM_MODEL_ID

ST_ADAPTER = "sie_server.adapters.sentence_transformer:SentenceTransformerDenseAdapter"
CROSS_ENCODER_ADAPTER = "sie_server.adapters.cross_encoder:CrossEncoderAdapter"

NEW_MODEL = "acme/tiny-embed"

# The reference's config-hash test vector: a bundle whose only routable model
# is exactly this document hashes to VECTOR_HASH.
VECTOR_DOCUMENT = yaml.safe_dump(
    next(doc for doc in BUILTIN_MODEL_DOCUMENTS if doc["sie_id"] == MINILM_MODEL_ID), sort_keys=False
)
VECTOR_HASH = "b34bdac36fb2882c67587534f9ba43f68278654b1513b5d5d820b979cf902ac4"


def model_yaml(
    model_id: str = NEW_MODEL,
    profiles: dict[str, dict] | None = None,
    **fields: object,
) -> str:
    """A model document; by default one `default` profile on the sentence-transformer adapter."""
    document: dict[str, object] = {"sie_id": model_id, **fields}
    document["profiles"] = profiles if profiles is not None else {"default": profile()}
    return yaml.safe_dump(document, sort_keys=False)


def profile(adapter: str = ST_ADAPTER, max_batch_tokens: int = 4096, **options: object) -> dict:
    spec: dict[str, object] = {"adapter_path": adapter, "max_batch_tokens": max_batch_tokens}
    if options:
        spec["adapter_options"] = {"runtime": dict(options)}
    return spec


def yaml_bomb(levels: int = 9, width: int = 9) -> str:
    """Billion laughs: each level is `width` aliases of the previous one."""
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, levels + 1):
        refs = ", ".join(f"*a{level - 1}" for _ in range(width))
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append("sie_id: acme/bomb")
    lines.append(f"profiles: {{default: {{adapter_path: x.y:Z, max_batch_tokens: 1, bomb: *a{levels}}}}}")
    return "\n".join(lines) + "\n"
