"""Configuration of the Config API and the choice of its store.

Environment (read by `ConfigServiceConfig.from_env` and `config_store_dir_from_env`):

- `SIE_CONFIG_STORE_DIR`: in embedded mode (no etcd), keep API-added model
  configs as files in this directory so they survive a restart. Ignored,
  with a warning, when the mesh runs on etcd (etcd is then the store).
- `SIE_CONFIG_RESTORE` (default `true`): at start-up, restore the API-added
  configs from the store. `false` starts from the filesystem and built-in
  configs only — the way out of a stored config that no longer loads. The
  store is left as it is (and the epoch keeps counting from it); writes made
  after start-up, here or on another replica, still apply. Replicas started
  with `false` disagree with the others until the skipped models are posted
  again, so set it on every replica or on none.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mesh.config_api.coordinated_store import CoordinatedConfigStore
from mesh.config_api.directory_store import DirectoryConfigStore
from mesh.config_api.document_intake import IntakeLimits
from mesh.config_api.store import ConfigStore
from mesh.coordination import CoordinationStore, MemoryStore

log = logging.getLogger(__name__)

CONFIG_STORE_DIR_ENV = "SIE_CONFIG_STORE_DIR"
CONFIG_RESTORE_ENV = "SIE_CONFIG_RESTORE"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_flag(name: str, text: str) -> bool:
    """`true/false/1/0/yes/no/on/off` (any case); ValueError naming the variable otherwise."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={text!r}: expected true or false")


@dataclass(frozen=True)
class ConfigServiceConfig:
    """How the router's Config API behaves. Every field has a production default."""

    restore: bool = True
    """Restore API-added configs from the store at start-up (SIE_CONFIG_RESTORE)."""
    ack_timeout_s: float = 3.0
    """How long a write waits for one worker per eligible bundle to report the new config hash."""
    bootstrap_timeout_s: float = 5.0
    """How long start-up waits for the store; past it the router starts degraded (filesystem
    and built-in configs only) and keeps trying in the background."""
    max_write_attempts: int = 32
    """Compare-and-swap rounds a write may lose to other writers before answering 503."""
    idempotency_ttl_s: float = 24 * 3600.0
    """How long the first answer to an Idempotency-Key is kept for replays."""
    retry_initial_s: float = 0.1
    """First delay before following the store again after it failed."""
    retry_max_s: float = 5.0
    """Longest delay between attempts to follow the store."""
    intake: IntakeLimits = field(default_factory=IntakeLimits)
    """Bounds on a posted document (size, alias-expanded nodes, depth)."""

    def __post_init__(self) -> None:
        for name in ("ack_timeout_s", "bootstrap_timeout_s", "idempotency_ttl_s", "retry_initial_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be at least retry_initial_s")
        if self.max_write_attempts < 1:
            raise ValueError("max_write_attempts must be at least 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **fields: object) -> ConfigServiceConfig:
        """A config whose `restore` comes from SIE_CONFIG_RESTORE; `fields` set the rest.
        Raises ValueError for a value that is not a boolean."""
        text = environ.get(CONFIG_RESTORE_ENV, "").strip()
        if text and "restore" not in fields:
            fields["restore"] = parse_flag(CONFIG_RESTORE_ENV, text)
        return cls(**fields)  # type: ignore[arg-type]


def config_store_dir_from_env(environ: Mapping[str, str] = os.environ) -> Path | None:
    """SIE_CONFIG_STORE_DIR as a path; None when unset or empty."""
    directory = environ.get(CONFIG_STORE_DIR_ENV, "").strip()
    return Path(directory) if directory else None


def open_config_store(
    coordination_store: CoordinationStore | None = None, *, store_dir: Path | None = None
) -> ConfigStore:
    """The config store a router should use.

    - On a coordination store other than an embedded MemoryStore (etcd):
      that store; `store_dir` is ignored with a warning.
    - Embedded, with `store_dir` (SIE_CONFIG_STORE_DIR): that directory.
    - Embedded otherwise: the given MemoryStore, or a private one
      (configs last as long as the process).

    A coordination store passed in stays its owner's to start and close.
    """
    embedded = coordination_store is None or isinstance(coordination_store, MemoryStore)
    if not embedded:
        if store_dir is not None:
            log.warning("%s=%s ignored: etcd holds the configs", CONFIG_STORE_DIR_ENV, store_dir)
        assert coordination_store is not None
        return CoordinatedConfigStore(coordination_store)
    if store_dir is not None:
        return DirectoryConfigStore(store_dir)
    if coordination_store is not None:
        return CoordinatedConfigStore(coordination_store)
    return CoordinatedConfigStore.embedded()
