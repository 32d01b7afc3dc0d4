"""The per-bundle config hash workers report; a worker has ACKed a config
change when its reported hash equals the router's.

Reference algorithm (sie-wire.md, Config API): sha256 hex of the canonical
JSON (sorted keys, no spaces) of the list, sorted by `sie_id`, of
`{"sie_id", "revision", "profiles": [{"name", "config"}]}` for every model
with a profile routable to the bundle, only those profiles, sorted by name,
`extends` resolved. An empty list hashes to "" (a bundle with nothing to
serve has no config to agree on).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from mesh.catalog.documents import ModelConfig, canonical_json


def config_hash(routable: Iterable[tuple[ModelConfig, Sequence[str]]]) -> str:
    """Hash of (model, routable profile names) pairs; pairs with no profile are skipped."""
    entries = [model.hash_entry(names) for model, names in routable if names]
    if not entries:
        return ""
    entries.sort(key=lambda entry: entry["sie_id"])
    # ensure_ascii stays on (json.dumps' default) to match the reference byte for byte.
    return hashlib.sha256(canonical_json(entries).encode("utf-8")).hexdigest()
