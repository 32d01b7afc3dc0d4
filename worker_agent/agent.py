"""The worker agent: registration links, task intake, model lifecycle, batching.

One agent runs next to one backend. It dials every router (`RouterLink`) --
a static list, the addresses of a DNS name, or the replicas registered in
etcd, followed as they change (`RouterDiscovery`) -- admits the tasks they
send (validation, model state, queue capacity, deadline), batches them
(`BatchLoop`) and answers each on the stream it came from. Lifecycle:
`start`, then serve, `drain` (readiness off first, finish in-flight work,
take nothing new), `stop` (every owned task cancelled and awaited, the
backend closed).

Models load lazily: the first task for a model that is not loaded starts the
load and, like every task that arrives while it loads, is answered
MODEL_LOADING with a Retry-After, so the router can go elsewhere rather than
hold the request. `preload` loads the whole bundle at start and reports ready
only then, so the first request is served.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from mesh import __version__ as MESH_VERSION
from mesh.catalog import Catalog, ConfigSource, ModelConfig
from mesh.clock import Clock, SystemClock
from mesh.errors import ErrorCode, MeshError
from mesh.ha import Resolver, RouterDiscovery, system_resolver
from mesh.routing.types import ModelState
from mesh.v1 import inference_pb2, registry_pb2
from worker_agent.backends.base import Backend
from worker_agent.batch_loop import BatchLoop, PendingTask
from worker_agent.batching import BatchKey, BatchLimits, estimate_request_tokens
from worker_agent.config import DEFAULT_MAX_BATCH_TOKENS, AgentConfig
from worker_agent.health import HealthEndpoint
from worker_agent.router_link import LinkSession, RouterLink, TaskOutcome
from worker_agent.status import AgentStatus, ModelReport, status_to_proto

log = logging.getLogger(__name__)

_RESPONSE_TYPES = {
    "encode": inference_pb2.EncodeResponse,
    "score": inference_pb2.ScoreResponse,
    "extract": inference_pb2.ExtractResponse,
}
"""What a backend must answer each operation with (a MeshError aside)."""

AGENT_VERSION = MESH_VERSION
DEFAULT_DRAIN_GRACE_S = 30.0
"""Grace of a router's Drain that names none."""


@dataclass(slots=True, eq=False)
class _ModelSlot:
    """One model of the bundle and where it stands on this worker."""

    config: ModelConfig
    state: ModelState = ModelState.AVAILABLE
    error: MeshError | None = None
    """Why the last load failed."""
    retry_load_at_s: float = math.inf
    """When a retryable load failure may be retried."""
    memory_bytes: int = 0
    loading: asyncio.Task[None] | None = None


class WorkerAgent:
    """One worker agent. See the module docstring; the agent owns and closes `backend`."""

    def __init__(
        self,
        config: AgentConfig,
        backend: Backend,
        catalog: Catalog,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.config = config
        self.backend = backend
        self._catalog = catalog
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        # Unique per incarnation whatever the rng: two processes must never share one.
        self.instance_uid = uuid.uuid4().hex
        self._models: dict[str, _ModelSlot] = {}
        self._bundle_config_hash = ""
        self._limits: dict[tuple[str, str], BatchLimits] = {}
        self._batches = BatchLoop(
            backend,
            clock=self._clock,
            limits_for=self._limits_for,
            capacity=config.queue_capacity,
            max_concurrent_batches=config.max_concurrent_batches,
            expiry_sweep_s=config.expiry_sweep_s,
            on_outcome=self._deliver,
            on_change=self._queue_changed,
        )
        self._links: dict[str, tuple[RouterLink, asyncio.Task[None]]] = {}
        """Every link whose `run` has not returned, by router address (retired ones included)."""
        self._discovery = RouterDiscovery(config.discovery, self._set_routers, resolver=resolver)
        self._sessions: set[LinkSession] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._health: HealthEndpoint | None = None
        self._phase = "new"
        self._draining = False
        self._preloaded = not config.preload
        self._was_saturated = False
        self._status_seq = 0

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Validate the bundle, open the health endpoint, dial the routers. Returns at once."""
        if self._phase != "new":
            raise RuntimeError("a worker agent starts once")
        if self._catalog.bundle(self.config.bundle) is None:
            known = ", ".join(bundle.name for bundle in self._catalog.bundles)
            raise MeshError(
                ErrorCode.CONFIG_INVALID, f"unknown bundle {self.config.bundle!r} (known: {known})"
            )
        self._sync_models()
        if self.config.health_port is not None:
            self._health = HealthEndpoint(self.config.health_host, self.config.health_port)
            await self._health.start()
        self._phase = "running"
        self._spawn(self._batches.run(), "batch-loop")
        self._set_routers(self._discovery.current)
        if self.config.discovery.dynamic:
            self._spawn(self._discovery.run(), "router-discovery")
        if self.config.preload:
            self._spawn(self._preload(), "preload")
        else:
            await self._publish_readiness()
        sources = [*self.config.routers, *(f"etcd {url}" for url in [self.config.etcd_url] if url)]
        log.info(
            "worker %s (instance %s) serving bundle %s with backend %s; routers: %s",
            self.config.worker_id,
            self.instance_uid,
            self.config.bundle,
            self.backend.name,
            ", ".join(sources),
        )

    async def drain(self, grace_s: float | None = None, reason: str = "draining") -> None:
        """Take nothing new and finish what is queued or running, for at most `grace_s`.

        Readiness turns false first. Tasks still queued when the grace runs out
        are answered NOT_READY (retryable: the router sends them elsewhere).
        Idempotent; the agent stays connected (draining) until `stop`.
        """
        grace_s = DEFAULT_DRAIN_GRACE_S if grace_s is None else grace_s
        if not self._draining:
            self._draining = True
            if self._health is not None:
                await self._health.set_ready(False)
            log.info("draining (%s); %d tasks in flight", reason, self._batches.in_flight)
            self._status_changed(urgent=True)
            notice = registry_pb2.WorkerMessage(drain_notice=registry_pb2.DrainNotice(reason=reason))
            for session in self._sessions:
                session.send(notice)
        try:
            async with asyncio.timeout(grace_s):
                await self._batches.wait_idle()
        except TimeoutError:
            failed = self._batches.fail_queued(
                MeshError(ErrorCode.NOT_READY, f"worker {self.config.worker_id} drained before the task ran")
            )
            log.warning("drain grace of %.1f s ran out; %d queued tasks sent back", grace_s, failed)

    async def stop(self) -> None:
        """Close the streams (briefly flushing), cancel and await every owned task, close the backend."""
        if self._phase == "stopped":
            return
        was_running = self._phase == "running"
        self._phase = "stopped"
        if self._health is not None:
            await self._health.set_ready(False)
        if was_running:
            links = list(self._links.values())
            for link, _ in links:
                link.request_close()
            if links:
                await asyncio.wait([task for _, task in links], timeout=self.config.link.close_timeout_s)
        current = asyncio.current_task()
        owned = [task for task in self._tasks if task is not current]
        for task in owned:
            task.cancel()
        await asyncio.gather(*owned, return_exceptions=True)
        try:
            await self.backend.close()
        finally:
            if self._health is not None:
                await self._health.stop()
        log.info("worker %s stopped", self.config.worker_id)

    # -- what others read -------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._phase == "running" and self._preloaded and not self._draining

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def bundle_config_hash(self) -> str:
        return self._bundle_config_hash

    @property
    def connected_routers(self) -> int:
        """Streams open and welcomed right now."""
        return len(self._sessions)

    @property
    def router_addresses(self) -> frozenset[str]:
        """Routers the agent keeps (or tries to keep) a stream to: the discovered set."""
        return self._discovery.current

    def _set_routers(self, addresses: frozenset[str]) -> None:
        """Reconcile the links with the discovered set: dial new routers, retire departed ones."""
        if self._phase != "running":
            return
        for address in addresses:
            entry = self._links.get(address)
            if entry is not None and not entry[1].done():
                entry[0].reinstate()
                continue
            link = RouterLink(address, self, self.config.link, clock=self._clock, rng=self._rng)
            task = self._spawn(link.run(), f"link-{address}")
            self._links[address] = (link, task)
            task.add_done_callback(lambda done, address=address: self._link_ended(address, done))
        for address, (link, _) in self._links.items():
            if address not in addresses and not link.retired:
                log.info("router %s left the discovered set; its link stops redialling", address)
                link.retire()

    def _link_ended(self, address: str, task: asyncio.Task[None]) -> None:
        entry = self._links.get(address)
        if entry is not None and entry[1] is task:
            del self._links[address]

    @property
    def health_port(self) -> int | None:
        """The health endpoint's bound port, once started."""
        return self._health.port if self._health is not None else None

    def status(self) -> AgentStatus:
        batches = self._batches
        return AgentStatus(
            ready=self.ready,
            draining=self._draining,
            bundle=self.config.bundle,
            machine_profile=self.config.machine_profile,
            pool=self.config.pool,
            gpu_count=self.config.gpu_count,
            max_batch_requests=self.config.max_batch_requests,
            bundle_config_hash=self._bundle_config_hash,
            queue_capacity=self.config.queue_capacity,
            queued=batches.queued,
            models=tuple(
                ModelReport(
                    model_id=slot.config.model_id,
                    state=slot.state,
                    queue_depth=batches.depth_by_model.get(slot.config.model_id, 0),
                    pending_items=batches.items_by_model.get(slot.config.model_id, 0),
                    memory_bytes=slot.memory_bytes,
                    error=slot.error.message
                    if slot.error is not None and slot.state is ModelState.FAILED
                    else "",
                )
                for slot in self._models.values()
            ),
        )

    # -- LinkHost: what the router links call --------------------------------------

    def hello(self) -> registry_pb2.Hello:
        return registry_pb2.Hello(
            worker_id=self.config.worker_id,
            instance_uid=self.instance_uid,
            agent_version=AGENT_VERSION,
            backend=self.backend.name,
            status=self.status_report(),
        )

    def status_report(self) -> registry_pb2.WorkerStatus:
        self._status_seq += 1
        return status_to_proto(self.status(), self._status_seq)

    def open_session(self, session: LinkSession) -> None:
        self._sessions.add(session)
        if self._draining:
            session.send(registry_pb2.WorkerMessage(drain_notice=registry_pb2.DrainNotice(reason="draining")))

    def close_session(self, session: LinkSession) -> None:
        """The stream is gone: its queued tasks are withdrawn, its running results dropped."""
        self._sessions.discard(session)
        for pending in list(session.tasks.values()):
            self._batches.cancel(pending)
        session.tasks.clear()

    def rotate_instance(self, reason: str, fenced_instance_uid: str = "") -> None:
        # Agent-wide: the fenced link says Hello with the new uid at once; the
        # other links keep their streams and carry it from their next Hello
        # (replicas share fences, so those streams end soon too).
        if fenced_instance_uid and fenced_instance_uid != self.instance_uid:
            # Another replica fenced the same incarnation and it was rotated
            # already: a second rotation would only split the replicas' views.
            log.info("instance %s fenced again (%s); now %s", fenced_instance_uid, reason, self.instance_uid)
            return
        previous, self.instance_uid = self.instance_uid, uuid.uuid4().hex
        log.warning("instance %s fenced (%s); now instance %s", previous, reason, self.instance_uid)

    def accept_task(self, session: LinkSession, task: registry_pb2.Task, received_at_s: float) -> None:
        try:
            pending = self._admit(session, task, received_at_s)
        except MeshError as error:
            self._reply_error(session, task.task_id, error)
            return
        session.tasks[pending.task_id] = pending

    def cancel_task(self, session: LinkSession, task_id: str) -> None:
        pending = session.tasks.pop(task_id, None)
        if pending is not None:
            self._batches.cancel(pending)

    def apply_config(self, session: LinkSession, update: registry_pb2.ConfigUpdate) -> None:
        """Apply model documents through the catalog, then ACK with the bundle's new config hash."""
        catalog = self._catalog
        for document in update.models:
            try:
                catalog, _ = catalog.with_model_document(document.yaml, source=ConfigSource.API)
            except MeshError as error:
                log.warning("config for %s not applied: %s", document.model_id or "?", error)
        previous_hash = self._bundle_config_hash
        self._catalog = catalog
        self._sync_models()
        expected = update.expected_bundle_config_hash
        if expected and expected != self._bundle_config_hash:
            log.warning(
                "config epoch %d: bundle %s hashes to %s here, the router expects %s",
                update.epoch,
                self.config.bundle,
                self._bundle_config_hash,
                expected,
            )
        session.send(
            registry_pb2.WorkerMessage(
                config_ack=registry_pb2.ConfigAck(
                    epoch=update.epoch, bundle_config_hash=self._bundle_config_hash
                )
            )
        )
        if self._bundle_config_hash != previous_hash:
            self._status_changed(urgent=True)

    def begin_drain(self, drain: registry_pb2.Drain) -> None:
        grace_s = drain.grace_ms / 1000.0 if drain.grace_ms else DEFAULT_DRAIN_GRACE_S
        self._spawn(self.drain(grace_s, reason=drain.reason or "router asked"), "drain")

    # -- intake -------------------------------------------------------------------

    def _admit(self, session: LinkSession, task: registry_pb2.Task, received_at_s: float) -> PendingTask:
        """A queued PendingTask for `task`, or the MeshError to answer it with."""
        operation = task.WhichOneof("request")
        if operation is None:
            raise MeshError(ErrorCode.INVALID_INPUT, "task carries no encode, score or extract request")
        if self._draining or self._phase != "running":
            raise MeshError(
                ErrorCode.NOT_READY, f"worker {self.config.worker_id} is draining; it takes no new tasks"
            )
        if task.task_id in session.tasks:
            raise MeshError(
                ErrorCode.INVALID_INPUT, f"task id {task.task_id!r} is already open on this stream"
            )
        slot = self._models.get(task.model_id.lower())
        if slot is None:
            raise MeshError(
                ErrorCode.MODEL_NOT_FOUND, f"model {task.model_id!r} is not in bundle {self.config.bundle!r}"
            )
        model = slot.config
        profile = task.profile or model.default_profile()
        if profile not in model.profiles:
            raise MeshError(
                ErrorCode.INVALID_INPUT,
                f"model {model.model_id!r} has no profile {profile!r} in bundle {self.config.bundle!r}",
                field="profile",
            )
        if slot.state is not ModelState.LOADED:
            raise self._not_loaded(slot, received_at_s)
        request = getattr(task, operation)
        if not request.items:
            raise MeshError(ErrorCode.INVALID_INPUT, "a request needs at least one item", field="items")
        budget_s = task.budget_ms / 1000.0 if task.budget_ms else self.config.default_task_budget_s
        pending = PendingTask(
            task_id=task.task_id,
            key=BatchKey(model.model_id, profile, operation, request.options.lora),
            request=request,
            items=len(request.items),
            tokens=estimate_request_tokens(operation, request),
            enqueued_at_s=received_at_s,
            deadline_s=received_at_s + budget_s,
            reply_to=session,
        )
        if not self._batches.submit(pending):
            raise MeshError(
                ErrorCode.QUEUE_FULL,
                f"worker {self.config.worker_id} queue is full ({self.config.queue_capacity} tasks)",
                retry_after_s=1.0,
            )
        return pending

    def _not_loaded(self, slot: _ModelSlot, now_s: float) -> MeshError:
        """The answer for a task whose model is not loaded; starts a load when one is due."""
        model_id = slot.config.model_id
        if slot.state is ModelState.FAILED and slot.error is not None:
            error = slot.error
            if not error.retryable or now_s < slot.retry_load_at_s:
                retry_after_s = max(0.0, slot.retry_load_at_s - now_s) if error.retryable else None
                return MeshError(error.code, error.message, retry_after_s=retry_after_s)
        if slot.state is not ModelState.LOADING:
            self._start_load(slot)
        return MeshError(
            ErrorCode.MODEL_LOADING, f"model {model_id} is loading on worker {self.config.worker_id}"
        )

    def _reply_error(self, session: LinkSession, task_id: str, error: MeshError) -> None:
        session.send(TaskOutcome(task_id, "", error.to_detail()))

    def _deliver(self, pending: PendingTask, outcome: Any, queue_s: float, inference_s: float) -> None:
        session: LinkSession = pending.reply_to
        session.tasks.pop(pending.task_id, None)
        if session.closed:
            return
        queue_ms = max(0.0, queue_s * 1000.0)
        inference_ms = max(0.0, inference_s * 1000.0)
        operation = pending.key.operation
        if not isinstance(outcome, MeshError) and type(outcome) is not _RESPONSE_TYPES[operation]:
            # A backend bug, answered here: the writer packs outcomes into shared
            # messages, where a wrong one would break the stream for every task on it.
            log.error("backend %s answered a %s task with %r", self.backend.name, operation, type(outcome))
            outcome = MeshError(
                ErrorCode.INTERNAL, f"the backend answered a {operation} task with no response"
            )
        if isinstance(outcome, MeshError):
            session.send(TaskOutcome(pending.task_id, "", outcome.to_detail(), queue_ms, inference_ms))
            return
        outcome.model = pending.key.model_id
        outcome.worker_id = self.config.worker_id
        timing = outcome.timing
        timing.queue_ms = queue_ms
        timing.inference_ms = inference_ms
        timing.total_ms = queue_ms + inference_ms
        session.send(TaskOutcome(pending.task_id, operation, outcome, queue_ms, inference_ms))

    def _limits_for(self, key: BatchKey) -> BatchLimits:
        cache_key = (key.model_id, key.profile)
        limits = self._limits.get(cache_key)
        if limits is None:
            slot = self._models.get(key.model_id.lower())
            profile = slot.config.profiles.get(key.profile) if slot is not None else None
            max_tokens = (
                self.config.max_batch_tokens
                or (profile.max_batch_tokens if profile is not None else 0)
                or DEFAULT_MAX_BATCH_TOKENS
            )
            limits = BatchLimits(self.config.max_batch_requests, max_tokens, self.config.max_batch_wait_s)
            self._limits[cache_key] = limits
        return limits

    # -- models --------------------------------------------------------------------

    def _sync_models(self) -> None:
        """Align the model slots with the catalog's view of the bundle (keeping load states)."""
        slots: dict[str, _ModelSlot] = {}
        for model in self._catalog.models_for_bundle(self.config.bundle):
            slot = self._models.get(model.key)
            if slot is None:
                slot = _ModelSlot(model)
            else:
                slot.config = model
            slots[model.key] = slot
        self._models = slots
        self._bundle_config_hash = self._catalog.bundle_config_hash(self.config.bundle)
        self._limits.clear()

    def _start_load(self, slot: _ModelSlot) -> None:
        slot.state = ModelState.LOADING
        slot.error = None
        slot.loading = self._spawn(self._load(slot), f"load-{slot.config.model_id}")
        self._status_changed(urgent=True)

    async def _load(self, slot: _ModelSlot) -> None:
        model_id = slot.config.model_id
        started_s = self._clock.monotonic()
        try:
            loaded = await self.backend.load(slot.config)
        except MeshError as error:
            self._load_failed(slot, error)
        except Exception as error:
            log.exception("loading %s failed", model_id)
            self._load_failed(
                slot, MeshError(ErrorCode.MODEL_LOAD_FAILED, f"loading {model_id} failed: {error}")
            )
        else:
            slot.state = ModelState.LOADED
            slot.memory_bytes = loaded.memory_bytes
            log.info("model %s loaded in %.2f s", model_id, self._clock.monotonic() - started_s)
        finally:
            slot.loading = None
            self._status_changed(urgent=True)

    def _load_failed(self, slot: _ModelSlot, error: MeshError) -> None:
        slot.state = ModelState.FAILED
        slot.error = error
        # Out of memory may pass (other models unload); a missing model never will.
        slot.retry_load_at_s = (
            self._clock.monotonic() + error.effective_retry_after_s if error.retryable else math.inf
        )
        log.warning("model %s failed to load: %s", slot.config.model_id, error)

    async def _preload(self) -> None:
        for slot in self._models.values():
            if slot.state in (ModelState.AVAILABLE, ModelState.FAILED):
                self._start_load(slot)
        loads = [slot.loading for slot in self._models.values() if slot.loading is not None]
        await asyncio.gather(*loads, return_exceptions=True)
        self._preloaded = True
        await self._publish_readiness()

    # -- status ------------------------------------------------------------------

    async def _publish_readiness(self) -> None:
        if self._health is not None:
            await self._health.set_ready(self.ready)
        self._status_changed(urgent=True)

    def _status_changed(self, urgent: bool) -> None:
        for session in self._sessions:
            session.note_status_change(urgent)

    def _queue_changed(self) -> None:
        saturated = self._batches.full
        urgent = saturated != self._was_saturated
        self._was_saturated = saturated
        for session in self._sessions:
            session.note_status_change(urgent)

    # -- owned tasks -----------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agent task %s failed", task.get_name(), exc_info=task.exception())
