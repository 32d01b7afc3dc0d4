"""`ConfigStore` on a `CoordinationStore`: etcd for HA meshes, MemoryStore when embedded.

Keys, relative to the coordination store's prefix (DESIGN.md):

| key | value |
|---|---|
| `config/models/{model key}` | JSON `{"model_id", "yaml", "source", "epoch"}` |
| `config/epoch` | decimal epoch, written in the same transaction as every model write |
| `config/idempotency/{sha256 of the key}` | the first answer to an Idempotency-Key, on a lease of its TTL |

A write is one transaction: "model key still at the revision I read, epoch
key still at the revision I read" -> put both. The model's JSON carries the
epoch it set, so a watcher of `config/models/` learns the epoch from the
event itself.
"""

from __future__ import annotations

import logging

from mesh.config_api.store import (
    ConfigChange,
    ConfigSnapshot,
    ConfigStore,
    ConfigWatch,
    StoredModel,
    WriteBase,
    decode_model,
    encode_model,
    model_key,
)
from mesh.coordination import (
    Condition,
    CoordinationStore,
    EventKind,
    KeyValue,
    MemoryStore,
    Put,
    WatchStream,
)
from mesh.errors import ErrorCode, MeshError

log = logging.getLogger(__name__)

MODELS_PREFIX = "config/models/"
EPOCH_KEY = "config/epoch"
IDEMPOTENCY_PREFIX = "config/idempotency/"


def _parse_epoch(kv: KeyValue | None) -> int:
    if kv is None:
        return 0
    try:
        value = int(kv.value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise MeshError(
            ErrorCode.INTERNAL, f"{EPOCH_KEY!r} holds {kv.value[:32]!r}, not a decimal epoch"
        ) from None
    if value < 0:
        raise MeshError(ErrorCode.INTERNAL, f"{EPOCH_KEY!r} holds a negative epoch")
    return value


def _decode_items(items: tuple[KeyValue, ...]) -> list[StoredModel]:
    models: list[StoredModel] = []
    for kv in items:
        try:
            models.append(decode_model(kv.value, kv.mod_revision, kv.key))
        except MeshError as error:
            # One unreadable record must not hide every other model.
            log.error("skipping config record: %s", error)
    return models


class CoordinatedConfigStore(ConfigStore):
    """Model configs in a CoordinationStore; see the module docstring."""

    def __init__(self, store: CoordinationStore, *, owns_store: bool = False) -> None:
        """`owns_store`: start and close `store` with this one (False when it is shared)."""
        self._store = store
        self._owns_store = owns_store

    @classmethod
    def embedded(cls) -> CoordinatedConfigStore:
        """Over a private MemoryStore: one router, nothing survives a restart."""
        return cls(MemoryStore(), owns_store=True)

    @property
    def coordination_store(self) -> CoordinationStore:
        return self._store

    @property
    def description(self) -> str:
        kind = "embedded memory store" if isinstance(self._store, MemoryStore) else type(self._store).__name__
        return f"{kind} under {self._store.prefix}{MODELS_PREFIX}"

    @property
    def connected(self) -> bool:
        return self._store.connected

    async def start(self) -> None:
        if self._owns_store:
            await self._store.start()

    async def close(self) -> None:
        if self._owns_store:
            await self._store.close()

    async def snapshot(self) -> ConfigSnapshot:
        read = await self._store.get_prefix(MODELS_PREFIX)
        models = _decode_items(read.items)
        # Read after the prefix: an epoch written in between only runs ahead
        # of the models, and the watch from read.revision brings the model.
        epoch = _parse_epoch(await self._store.get(EPOCH_KEY))
        epoch = max([epoch, *(model.epoch for model in models)])
        return ConfigSnapshot(tuple(models), epoch, read.revision)

    async def read_for_write(self, model_id: str) -> WriteBase:
        key = MODELS_PREFIX + model_key(model_id)
        kv = await self._store.get(key)
        epoch_kv = await self._store.get(EPOCH_KEY)
        model = decode_model(kv.value, kv.mod_revision, key) if kv is not None else None
        return WriteBase(model, _parse_epoch(epoch_kv), epoch_kv.mod_revision if epoch_kv else 0)

    async def compare_and_write(self, base: WriteBase, model_id: str, yaml_text: str) -> StoredModel | None:
        key = MODELS_PREFIX + model_key(model_id)
        epoch = base.epoch + 1
        result = await self._store.txn(
            [
                Condition.at_revision(key, base.model.revision if base.model else 0),
                Condition.at_revision(EPOCH_KEY, base.epoch_token),
            ],
            [Put(key, encode_model(model_id, yaml_text, epoch)), Put(EPOCH_KEY, str(epoch).encode())],
        )
        if not result.succeeded:
            return None
        return StoredModel(model_id, yaml_text, epoch, result.revision)

    def watch(self, after_revision: int) -> ConfigWatch:
        return _CoordinatedWatch(self._store.watch_prefix(MODELS_PREFIX, start_revision=after_revision + 1))

    async def get_idempotency_record(self, key_hash: str) -> bytes | None:
        kv = await self._store.get(IDEMPOTENCY_PREFIX + key_hash)
        return kv.value if kv is not None else None

    async def put_idempotency_record(self, key_hash: str, record: bytes, ttl_s: float) -> None:
        # A lease per record: etcd forgets it after the TTL with no sweeper to run.
        lease = await self._store.grant_lease(ttl_s)
        result = await self._store.create_if_absent(
            IDEMPOTENCY_PREFIX + key_hash, record, lease_id=lease.lease_id
        )
        if not result.succeeded:
            await self._store.revoke_lease(lease.lease_id)


class _CoordinatedWatch(ConfigWatch):
    def __init__(self, stream: WatchStream) -> None:
        self._stream = stream

    async def __anext__(self) -> ConfigChange:
        while True:
            event = await self._stream.__anext__()
            if event.kind is EventKind.RESYNC:
                models = _decode_items(event.snapshot)
                epoch = max([0, *(model.epoch for model in models)])
                return ConfigChange(
                    event.revision, snapshot=ConfigSnapshot(tuple(models), epoch, event.revision)
                )
            if event.kind is EventKind.DELETE:
                log.warning(
                    "config record %s was deleted in the store; model configs are append-only, "
                    "so the model stays until the routers restart",
                    event.key,
                )
                continue
            assert event.kv is not None
            try:
                model = decode_model(event.kv.value, event.kv.mod_revision, event.key)
            except MeshError as error:
                log.error("ignoring config record: %s", error)
                continue
            return ConfigChange(event.revision, model=model)

    async def aclose(self) -> None:
        await self._stream.aclose()
