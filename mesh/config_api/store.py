"""Where API-added model configs live: one interface, two homes.

- `CoordinatedConfigStore`: a `CoordinationStore` (etcd in HA, the embedded
  MemoryStore otherwise), keys `config/models/{model key}` and `config/epoch`
  under the store's prefix.
- `DirectoryConfigStore`: one JSON file per model under `SIE_CONFIG_STORE_DIR`,
  for a single embedded router that must keep its configs across restarts.

Semantics both keep:

- A write is a compare-and-swap of one model's document *and* the epoch, in
  one atomic step: `read_for_write` returns what it saw (`WriteBase`),
  `compare_and_write` applies only if neither the model nor the epoch moved
  since, and returns None otherwise so the caller re-reads and re-merges.
  The epoch therefore counts exactly the writes that happened, whatever the
  contention.
- Every stored document carries the epoch its write produced, so a replica
  that sees the document (snapshot or watch) knows the epoch too, with no
  second read.
- Records are append-only: nothing deletes a model. A deletion made by hand
  is ignored until restart.
- Model keys are the case-folded model id (ids resolve case-insensitively, so
  `BAAI/bge-m3` and `baai/bge-m3` must collide); the document keeps the case.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from mesh.catalog import ConfigSource
from mesh.coordination.store import EventStream
from mesh.errors import ErrorCode, MeshError


@dataclass(frozen=True)
class StoredModel:
    """One model document as the store holds it."""

    model_id: str
    """Model id in catalog case."""
    yaml: str
    """The whole model document (every profile, `extends` kept), as the catalog exports it."""
    epoch: int
    """The config epoch the write that produced this version set."""
    revision: int
    """The store's version of the record: the compare-and-swap token of the next write."""
    source: ConfigSource = ConfigSource.API
    """Always `api` today; kept so other writers can be told apart later."""

    @property
    def key(self) -> str:
        return model_key(self.model_id)


@dataclass(frozen=True)
class ConfigSnapshot:
    """Every stored model at one point of the store's history."""

    models: tuple[StoredModel, ...]
    """Sorted by key."""
    epoch: int
    """The config epoch at that point."""
    revision: int
    """Resume a watch after this revision to see every later write exactly once."""


@dataclass(frozen=True)
class WriteBase:
    """What a writer saw before merging: the tokens `compare_and_write` checks."""

    model: StoredModel | None
    """The stored version of the model being written; None when there is none."""
    epoch: int
    """The epoch the write will increment."""
    epoch_token: int
    """The store's version of the epoch record (0: none yet)."""


@dataclass(frozen=True)
class ConfigChange:
    """One thing a watch saw: a model written, or a full re-read after a gap."""

    revision: int
    """Store revision of the change."""
    model: StoredModel | None = None
    """The model written (None for a RESYNC)."""
    snapshot: ConfigSnapshot | None = None
    """Set when history was lost: the whole store at `revision`; apply every model in it."""


def model_key(model_id: str) -> str:
    return model_id.lower()


def encode_model(model_id: str, yaml_text: str, epoch: int, source: ConfigSource = ConfigSource.API) -> bytes:
    return json.dumps(
        {"model_id": model_id, "yaml": yaml_text, "source": source.value, "epoch": epoch},
        separators=(",", ":"),
    ).encode()


def decode_model(value: bytes, revision: int, where: str) -> StoredModel:
    """A stored record back; INTERNAL naming `where` when it is not one of ours."""
    try:
        record = json.loads(value)
        model = StoredModel(
            model_id=str(record["model_id"]),
            yaml=str(record["yaml"]),
            epoch=int(record["epoch"]),
            revision=revision,
            source=ConfigSource(record.get("source", ConfigSource.API.value)),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise MeshError(ErrorCode.INTERNAL, f"config store record {where} is unreadable: {error}") from None
    if model.epoch < 0:
        raise MeshError(ErrorCode.INTERNAL, f"config store record {where} has a negative epoch")
    return model


class ConfigWatch(EventStream[ConfigChange]):
    """Changes after a revision, in order."""


class ConfigStore(abc.ABC):
    """Durable, compare-and-swap storage of API-added model documents and the epoch.

    Lifecycle: `start()` then use, `close()` (both idempotent). Every call may
    raise MeshError(STORE_UNAVAILABLE) within a bounded time.
    """

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """Where the configs live, for logs."""

    @property
    def connected(self) -> bool:
        """Whether the store answered recently."""
        return True

    async def start(self) -> None:
        """Connect or open (idempotent); never fails for an unreachable store."""

    async def close(self) -> None:
        """Release what the store holds (idempotent)."""

    @abc.abstractmethod
    async def snapshot(self) -> ConfigSnapshot:
        """Every stored model and the epoch, consistently."""

    @abc.abstractmethod
    async def read_for_write(self, model_id: str) -> WriteBase:
        """The stored model (any case of `model_id`) and the epoch, with their CAS tokens."""

    @abc.abstractmethod
    async def compare_and_write(self, base: WriteBase, model_id: str, yaml_text: str) -> StoredModel | None:
        """Store the model at epoch `base.epoch + 1` iff neither it nor the epoch moved
        since `base` was read; the stored version, or None when something moved."""

    @abc.abstractmethod
    def watch(self, after_revision: int) -> ConfigWatch:
        """Model writes after `after_revision`, in order, each once (RESYNC on a gap)."""

    @abc.abstractmethod
    async def get_idempotency_record(self, key_hash: str) -> bytes | None:
        """The record kept for an Idempotency-Key (its hash); None when none or expired."""

    @abc.abstractmethod
    async def put_idempotency_record(self, key_hash: str, record: bytes, ttl_s: float) -> None:
        """Keep a record for `ttl_s`; a record already kept for the key wins (first answer)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
