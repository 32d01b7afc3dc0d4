"""Backends by name: what actually runs the models behind a worker agent.

`create_backend(name, config)` builds one; `register_backend` adds a kind (an
HTTP backend in front of `sie-server`, say) without touching the agent. The
built-in kinds import lazily, so choosing `fake` never imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from worker_agent.backends.base import (
    Backend,
    BatchTarget,
    EncodeOutcome,
    ExtractOutcome,
    LoadedModel,
    ScoreOutcome,
)

BackendFactory = Callable[[Any], Backend]
"""Builds a backend from its own config object (None for the defaults)."""

_BUILTIN: dict[str, str] = {
    "fake": "worker_agent.backends.fake:FakeBackend",
    "sentence-transformers": "worker_agent.backends.sentence_transformer:SentenceTransformerBackend",
}
_REGISTERED: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `name` available to `create_backend` (and so to `--backend`)."""
    if name in _BUILTIN or name in _REGISTERED:
        raise ValueError(f"backend {name!r} is already registered")
    _REGISTERED[name] = factory


def backend_names() -> list[str]:
    return sorted({*_BUILTIN, *_REGISTERED})


def create_backend(name: str, config: Any = None) -> Backend:
    """A new backend of kind `name`; raises ValueError for an unknown name."""
    factory = _REGISTERED.get(name)
    if factory is None:
        target = _BUILTIN.get(name)
        if target is None:
            raise ValueError(f"unknown backend {name!r}; known: {', '.join(backend_names())}")
        module_name, _, class_name = target.partition(":")
        factory = getattr(importlib.import_module(module_name), class_name)
    return factory(config)


__all__ = [
    "Backend",
    "BackendFactory",
    "BatchTarget",
    "EncodeOutcome",
    "ExtractOutcome",
    "LoadedModel",
    "ScoreOutcome",
    "backend_names",
    "create_backend",
    "register_backend",
]
