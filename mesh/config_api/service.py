"""`ConfigService`: the router side of the Config API.

It owns the router's catalog as far as configuration goes:

- **Start**: read every API-added model from the store (unless
  SIE_CONFIG_RESTORE is false) and merge it into the filesystem/built-in
  catalog, within `bootstrap_timeout_s`; a store that does not answer leaves
  the router serving the filesystem/built-in catalog (`bootstrap_degraded`)
  while the follower keeps trying.
- **Follow**: one owned task watches the store from the snapshot's revision,
  so a write made on any replica is merged here too. Each merge that created
  profiles swaps the catalog (through `on_change`: the router's dispatcher
  reads it through a callable, so the swap is the whole switch-over), raises
  the epoch, and pushes `ConfigUpdate` down the stream of every connected
  worker whose bundle the new profiles route to.
- **Write**: validate against the local catalog, then a compare-and-swap loop:
  read the stored model and the epoch, merge the stored document and the new
  one (`Catalog.with_model_document`), write both iff neither moved. A lost
  race re-reads and re-merges, so two replicas adding profiles to one model
  at once both land and the epoch counts each write exactly once. The writer
  applies its own write at once (no wait for its watch), then waits up to
  `ack_timeout_s` for one worker per eligible bundle with workers to report
  the new bundle config hash.
- **Late workers**: `on_attach` sends a worker every API-added model of its
  bundle right after its Welcome.

Everything that touches the catalog runs on the event loop without awaiting
in between, so local merges cannot interleave and lose one another.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from mesh.catalog import AddResult, Catalog, ConfigSource, ModelConfig
from mesh.config_api.acks import AckProgress, WorkerConfigView, ack_progress, bundle_ack_status
from mesh.config_api.api import (
    AddModelReply,
    BundleDocumentReply,
    BundleListing,
    EpochReply,
    ExportReply,
    ModelAckStatus,
    ModelDocumentReply,
    ModelListing,
    ResolveReply,
)
from mesh.config_api.document_intake import admit_document, document_digest, idempotency_key_hash
from mesh.config_api.settings import ConfigServiceConfig
from mesh.config_api.store import ConfigChange, ConfigSnapshot, ConfigStore, StoredModel
from mesh.coordination import Backoff, BackoffPolicy
from mesh.errors import ErrorCode, MeshError
from mesh.registry import WorkerRegistry, WorkerSession
from mesh.v1 import registry_pb2

log = logging.getLogger(__name__)

_MAX_RESOLVE_PATH = 512


@dataclass
class ConfigStats:
    """Counters for metrics (sie_gateway_config_deltas_total and friends)."""

    deltas: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    """(kind, result) -> count; kind `model` (a stored document merged) or `write` (an API
    write), result `applied`, `unchanged` or `rejected`."""
    cas_retries: int = 0
    """Compare-and-swap rounds lost to another writer (each re-read and re-merged)."""


class _KeyedLocks:
    """One lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def eligible_bundles(catalog: Catalog, model_id: str, profiles: Iterable[str]) -> tuple[str, ...]:
    """Bundles any of `profiles` routes to, lowest priority number first."""
    serving: set[str] = set()
    for profile in profiles:
        serving.update(catalog.bundles_for_profile(model_id, profile))
    return tuple(bundle.name for bundle in catalog.bundles if bundle.name in serving)


class ConfigService:
    """The in-process `ConfigApi` of one router; see the module docstring.

    Lifecycle: `await start()` before the router accepts workers, `await stop()`
    after. Hook `on_attach` and `on_config_ack` into the WorkerRegistryService.
    """

    def __init__(
        self,
        store: ConfigStore,
        *,
        registry: WorkerRegistry,
        router_id: str,
        catalog: Catalog,
        on_change: Callable[[Catalog, int], None] = lambda catalog, epoch: None,
        settings: ConfigServiceConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """
        store: where API-added configs live (started and closed with this service).
        registry: the router's live workers (for pushes and ACKs).
        catalog: the filesystem/built-in catalog to merge stored configs into.
        on_change: called with (catalog, epoch) after every change; the router swaps its catalog there.
        """
        self._store = store
        self._registry = registry
        self._router_id = router_id
        self._catalog = catalog
        self._epoch = 0
        self._on_change = on_change
        self._settings = settings or ConfigServiceConfig()
        self._rng = rng or random.Random()
        self._follower: asyncio.Task[None] | None = None
        # Store revisions at or below this were skipped at start-up (SIE_CONFIG_RESTORE=false).
        self._ignore_up_to = 0
        self._acked_hashes: weakref.WeakKeyDictionary[WorkerSession, str] = weakref.WeakKeyDictionary()
        self._acks_changed = asyncio.Event()
        self._key_locks = _KeyedLocks()
        self.bootstrap_degraded = False
        """True while the stored configs could not be read (serving filesystem/built-ins only)."""
        self.stats = ConfigStats()
        registry.add_listener(self._notify_acks)

    # --- lifecycle ---------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def config_epoch(self) -> int:
        return self._epoch

    @property
    def store(self) -> ConfigStore:
        return self._store

    @property
    def store_connected(self) -> bool:
        return self._store.connected

    async def start(self) -> None:
        """Restore from the store (bounded by `bootstrap_timeout_s`), then follow it."""
        if self._follower is not None:
            return
        await self._store.start()
        snapshot: ConfigSnapshot | None = None
        try:
            async with asyncio.timeout(self._settings.bootstrap_timeout_s):
                snapshot = await self._store.snapshot()
        except (MeshError, TimeoutError) as error:
            self.bootstrap_degraded = True
            log.warning(
                "config store (%s) unavailable at start (%s); serving filesystem and built-in configs "
                "until it answers",
                self._store.description,
                error or "timed out",
            )
        else:
            self._bootstrap(snapshot)
        self._follower = asyncio.create_task(
            self._follow(snapshot.revision if snapshot is not None else None), name="config-follower"
        )

    async def stop(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        await self._store.close()

    async def _follow(self, revision: int | None) -> None:
        backoff = Backoff(
            BackoffPolicy(initial_s=self._settings.retry_initial_s, max_s=self._settings.retry_max_s),
            self._rng,
        )
        while True:
            try:
                if revision is None:
                    snapshot = await self._store.snapshot()
                    self._bootstrap(snapshot)
                    revision = snapshot.revision
                async with self._store.watch(revision) as changes:
                    async for change in changes:
                        revision = self._apply_change(change)
                        backoff.reset()
                return  # the store closed its watch: it is shutting down
            except MeshError as error:
                log.warning("following the config store failed (%s); retrying", error)
            except Exception:
                log.exception("following the config store failed; retrying")
            await asyncio.sleep(backoff.next_delay_s())

    def _bootstrap(self, snapshot: ConfigSnapshot) -> None:
        if self._settings.restore:
            for model in snapshot.models:
                self._merge_stored(model, origin="restore")
            if snapshot.models:
                log.info(
                    "restored %d API-added model configs from %s",
                    len(snapshot.models),
                    self._store.description,
                )
        else:
            self._ignore_up_to = max(self._ignore_up_to, snapshot.revision)
            if snapshot.models:
                log.warning(
                    "SIE_CONFIG_RESTORE=false: %d API-added model configs in %s not restored",
                    len(snapshot.models),
                    self._store.description,
                )
        self._raise_epoch(snapshot.epoch)
        self.bootstrap_degraded = False

    def _apply_change(self, change: ConfigChange) -> int:
        if change.snapshot is not None:
            for model in change.snapshot.models:
                if model.revision > self._ignore_up_to:
                    self._merge_stored(model, origin="resync")
            self._raise_epoch(change.snapshot.epoch)
        elif change.model is not None and change.model.revision > self._ignore_up_to:
            self._merge_stored(change.model, origin="watch")
        return change.revision

    # --- applying configs ----------------------------------------------------------

    def _merge_stored(self, stored: StoredModel, *, origin: str) -> AddResult | None:
        """Merge a stored document into the catalog; push what it created to the workers."""
        try:
            catalog, result = self._catalog.with_model_document(stored.yaml, source=ConfigSource.API)
        except MeshError as error:
            # Another replica accepted it, so this one's filesystem configs disagree
            # with the others'. Skip the model rather than stop following.
            self.stats.deltas["model", "rejected"] += 1
            log.error("stored config of %s (%s) not applied: %s", stored.model_id, origin, error)
            self._raise_epoch(stored.epoch)
            return None
        self.stats.deltas["model", "applied" if result.created_profiles else "unchanged"] += 1
        self._swap(catalog, max(self._epoch, stored.epoch))
        if result.created_profiles:
            log.info(
                "config epoch %d: %s profiles %s added (%s)",
                self._epoch,
                result.model_id,
                ", ".join(result.created_profiles),
                origin,
            )
            self._push(result.model_id, result.created_profiles)
        return result

    def _raise_epoch(self, epoch: int) -> None:
        self._swap(self._catalog, max(self._epoch, epoch))

    def _swap(self, catalog: Catalog, epoch: int) -> None:
        if catalog is self._catalog and epoch == self._epoch:
            return
        self._catalog = catalog
        self._epoch = epoch
        self._on_change(catalog, epoch)
        self._notify_acks()  # the expected hashes may have changed

    def _push(self, model_id: str, created_profiles: Sequence[str]) -> None:
        """Send the model to every connected worker of a bundle the new profiles route to."""
        catalog = self._catalog
        bundles = set(eligible_bundles(catalog, model_id, created_profiles))
        document = registry_pb2.ModelConfigDocument(
            model_id=model_id, yaml=catalog.canonical_model_yaml(model_id)
        )
        for session in self._registry:
            bundle = catalog.bundle(session.status.bundle)
            if session.closed or bundle is None or bundle.name not in bundles:
                continue
            self._send_update(session, [document], catalog.bundle_config_hash(bundle.name))

    def _send_update(
        self, session: WorkerSession, documents: list[registry_pb2.ModelConfigDocument], expected_hash: str
    ) -> None:
        update = registry_pb2.ConfigUpdate(
            epoch=self._epoch, models=documents, expected_bundle_config_hash=expected_hash
        )
        # A worker that just left gets everything again when it comes back.
        with contextlib.suppress(MeshError):
            session.send(registry_pb2.RouterMessage(config_update=update))

    # --- worker hooks ------------------------------------------------------------------

    def on_attach(self, session: WorkerSession) -> None:
        """A worker registered: send it the API-added configs of its bundle.

        The registry calls this just before it queues the Welcome, and a worker
        treats anything before the Welcome as a protocol violation; deferring
        by one loop iteration puts the update right after it (Connect queues
        the Welcome without awaiting in between).
        """
        asyncio.get_running_loop().call_soon(self._catch_up, session)

    def _catch_up(self, session: WorkerSession) -> None:
        if session.closed:
            return
        catalog = self._catalog
        bundle = catalog.bundle(session.status.bundle)
        if bundle is None:
            return
        documents = [
            registry_pb2.ModelConfigDocument(
                model_id=model.model_id, yaml=catalog.canonical_model_yaml(model.model_id)
            )
            for model in catalog.models_for_bundle(bundle.name)
            if model.source is ConfigSource.API
        ]
        if documents:
            self._send_update(session, documents, catalog.bundle_config_hash(bundle.name))

    def on_config_ack(self, session: WorkerSession, ack: registry_pb2.ConfigAck) -> None:
        """A worker applied a ConfigUpdate and says which bundle config hash it now has."""
        self._acked_hashes[session] = ack.bundle_config_hash
        self._notify_acks()

    def _notify_acks(self) -> None:
        self._acks_changed.set()
        self._acks_changed = asyncio.Event()

    def _worker_views(self) -> list[WorkerConfigView]:
        views = []
        for session in self._registry:
            if session.closed:
                continue
            hashes = {session.status.bundle_config_hash}
            acked = self._acked_hashes.get(session)
            if acked:
                hashes.add(acked)
            views.append(
                WorkerConfigView(session.worker_id, session.status.bundle.lower(), frozenset(hashes))
            )
        return views

    def _progress(self, model_id: str, profiles: Sequence[str]) -> AckProgress:
        catalog = self._catalog
        bundles = eligible_bundles(catalog, model_id, profiles)
        expected = {bundle: catalog.bundle_config_hash(bundle) for bundle in bundles}
        return ack_progress(bundles, expected, self._worker_views())

    async def _wait_for_acks(self, model_id: str, profiles: Sequence[str]) -> AckProgress:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.ack_timeout_s
        while True:
            # Taken before evaluating, so a change during the evaluation still wakes us.
            changed = self._acks_changed
            progress = self._progress(model_id, profiles)
            remaining = deadline - loop.time()
            if not progress.worker_ack_pending or remaining <= 0:
                return progress
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()

    # --- writes ---------------------------------------------------------------------------

    async def add_model_config(
        self, document: str, *, idempotency_key: str = "", content_type: str = ""
    ) -> AddModelReply:
        text = admit_document(document, content_type, self._settings.intake)
        if not idempotency_key:
            return await self._write(text)
        key_hash = idempotency_key_hash(idempotency_key)
        digest = document_digest(text)
        # Serialised per key on this replica, so a client's concurrent retries
        # see one write and then its replay.
        async with self._key_locks.hold(key_hash):
            replay = await self._replay(key_hash, digest)
            if replay is not None:
                return replay
            reply = await self._write(text)
            record = json.dumps({"document_sha256": digest, "reply": reply.to_record()}).encode()
            try:
                await self._store.put_idempotency_record(key_hash, record, self._settings.idempotency_ttl_s)
            except MeshError as error:
                # The write is done; only a later replay is lost (it would answer 200, not 201).
                log.warning("idempotency record for %s not kept: %s", reply.model_id, error)
            return reply

    async def _replay(self, key_hash: str, digest: str) -> AddModelReply | None:
        raw = await self._store.get_idempotency_record(key_hash)
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            stored_digest = str(record["document_sha256"])
            reply = AddModelReply.from_record(record["reply"])
        except (ValueError, KeyError, TypeError) as error:
            log.warning("ignoring an unreadable idempotency record: %s", error)
            return None
        if stored_digest != digest:
            raise MeshError(
                ErrorCode.CONFIG_CONFLICT,
                "this Idempotency-Key was already used with a different document; use a new key",
                field="Idempotency-Key",
            )
        return reply

    async def _write(self, text: str) -> AddModelReply:
        # Refuse a bad document against the local view before touching the store.
        _, preview = self._catalog.with_model_document(text, source=ConfigSource.API)
        model_id = preview.model_id
        for _ in range(self._settings.max_write_attempts):
            base = await self._store.read_for_write(model_id)
            catalog = self._catalog
            if base.model is not None:
                try:
                    catalog, _ = catalog.with_model_document(base.model.yaml, source=ConfigSource.API)
                except MeshError as error:
                    raise MeshError(
                        ErrorCode.CONFIG_CONFLICT,
                        f"the stored config of {base.model.model_id!r} does not merge with this "
                        f"router's configs: {error.message}",
                    ) from None
            merged, result = catalog.with_model_document(text, source=ConfigSource.API)
            profiles = (*result.created_profiles, *result.existing_profiles_skipped)
            if result.unchanged:
                if base.model is not None:
                    self._merge_stored(base.model, origin="read")  # reads after this reply agree with it
                self.stats.deltas["write", "unchanged"] += 1
                return self._reply(result, self._progress(result.model_id, profiles), unchanged=True)
            stored = await self._store.compare_and_write(
                base, result.model_id, merged.canonical_model_yaml(result.model_id)
            )
            if stored is None:
                self.stats.cas_retries += 1
                continue
            self.stats.deltas["write", "applied"] += 1
            self._merge_stored(stored, origin=f"write on {self._router_id}")
            progress = await self._wait_for_acks(result.model_id, result.created_profiles)
            return self._reply(result, progress, unchanged=False)
        raise MeshError(
            ErrorCode.STORE_UNAVAILABLE,
            f"gave up writing {model_id!r} after losing {self._settings.max_write_attempts} "
            "compare-and-swap rounds to other writers",
            retry_after_s=1.0,
        )

    def _reply(self, result: AddResult, progress: AckProgress, *, unchanged: bool) -> AddModelReply:
        catalog = self._catalog
        profiles = sorted((*result.created_profiles, *result.existing_profiles_skipped))
        return AddModelReply(
            model_id=result.model_id,
            created_profiles=result.created_profiles,
            existing_profiles_skipped=result.existing_profiles_skipped,
            warnings=result.warnings,
            routable_bundles_by_profile={
                name: catalog.bundles_for_profile(result.model_id, name) for name in profiles
            },
            worker_ack_pending=progress.worker_ack_pending,
            eligible_bundles_count=progress.eligible_bundles_count,
            eligible_bundles_with_workers_count=progress.eligible_bundles_with_workers_count,
            acked_workers=progress.acked_workers,
            total_eligible=progress.total_eligible,
            pending_workers=progress.pending_workers,
            router_id=self._router_id,
            unchanged=unchanged,
            epoch=self._epoch,
        )

    # --- reads ------------------------------------------------------------------------------

    async def list_models(self) -> tuple[ModelListing, ...]:
        return tuple(
            ModelListing(model.model_id, tuple(model.profiles), model.source)
            for model in self._catalog.models
        )

    def _model(self, model_id: str) -> ModelConfig:
        model = self._catalog.model(model_id)
        if model is None:
            raise MeshError(ErrorCode.MODEL_NOT_FOUND, f"model {model_id[:200]!r} is not in the catalog")
        return model

    async def get_model(self, model_id: str) -> ModelDocumentReply:
        model = self._model(model_id)
        return ModelDocumentReply(
            model.model_id, self._catalog.canonical_model_yaml(model.model_id), model.source
        )

    async def model_status(self, model_id: str) -> ModelAckStatus:
        catalog = self._catalog
        model = self._model(model_id)
        views = self._worker_views()
        bundles = eligible_bundles(catalog, model.model_id, model.profiles)
        return ModelAckStatus(
            model.model_id,
            self._epoch,
            tuple(bundle_ack_status(bundle, catalog.bundle_config_hash(bundle), views) for bundle in bundles),
        )

    async def list_bundles(self) -> tuple[BundleListing, ...]:
        connected = collections.Counter(view.bundle_key for view in self._worker_views())
        return tuple(
            BundleListing(
                bundle.name,
                bundle.priority,
                len(bundle.adapters),
                bundle.source,
                connected[bundle.name.lower()],
            )
            for bundle in self._catalog.bundles
        )

    async def get_bundle(self, bundle_id: str) -> BundleDocumentReply:
        catalog = self._catalog
        bundle = catalog.bundle(bundle_id)
        text = catalog.bundle_yaml(bundle_id)
        if bundle is None or text is None:
            raise MeshError(ErrorCode.NOT_FOUND, f"bundle {bundle_id[:200]!r} is not known")
        return BundleDocumentReply(bundle.name, text)

    async def resolve(self, model: str) -> ResolveReply:
        if not model or len(model) > _MAX_RESOLVE_PATH:
            raise MeshError(
                ErrorCode.INVALID_INPUT, "model: expected [bundle:/]org/model[:profile]", field="model"
            )
        catalog = self._catalog
        resolution = catalog.resolve(model)
        profiles = tuple(self._model(resolution.model_id).profiles)
        return ResolveReply(
            resolution.model_id, resolution.resolved_bundle, resolution.compatible_bundles, profiles
        )

    async def epoch(self) -> EpochReply:
        return EpochReply(self._epoch, self._catalog.bundles_hash())

    async def export(self) -> ExportReply:
        return ExportReply(self._epoch, self._catalog.export())
