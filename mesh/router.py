"""The router process: gRPC server, live registry, dispatcher and their lifecycle.

Lifecycle: `start` (bind, serve), `drain` (readiness goes false first, then
new requests are refused while in-flight ones finish), `stop` (close worker
streams, stop the server). `Router.service` is the in-process `MeshService`
the HTTP facade calls when it runs inside the router (no gRPC hop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from mesh.catalog import Catalog, load_catalog
from mesh.clock import Clock, SystemClock
from mesh.cluster_view import RateMeter, cluster_health, find_model, model_summaries
from mesh.config_api import (
    ConfigService,
    ConfigServiceConfig,
    ConfigStore,
    add_config_servicer,
    open_config_store,
)
from mesh.coordination import DEFAULT_PREFIX, CoordinationStore, SystemSleepClock, open_store
from mesh.dispatch import Dispatcher, DispatchPolicy
from mesh.errors import ErrorCode, MeshError
from mesh.ha import Leadership, Replica, ReplicaConfig
from mesh.pools import PoolsConfig, RouterPools, add_pools_servicer
from mesh.registry import WorkerRegistry
from mesh.routing import RoutingPolicy
from mesh.services import ClusterService, InferenceService, RegistrySettings, WorkerRegistryService
from mesh.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

log = logging.getLogger(__name__)

INFERENCE_SERVICE = "mesh.v1.Inference"
REGISTRY_SERVICE = "mesh.v1.WorkerRegistry"

# Keepalive is set on both ends together: the worker agent pings every 10 s
# and the router allows it, so dead peers are found without waiting on TCP.
SERVER_OPTIONS = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
    # Worker streams carry task and result batches: let gRPC favour throughput.
    ("grpc.optimization_target", "throughput"),
)


def default_router_id(port: int) -> str:
    return f"router-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def default_advertise_address(host: str, port: int) -> str:
    """What workers dial when none is configured: the bind address, or this host's for a wildcard."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


@dataclass(frozen=True)
class RouterConfig:
    host: str = "127.0.0.1"
    """Address the gRPC server binds."""
    port: int = 50051
    """gRPC port; 0 picks a free one (see `Router.port`)."""
    router_id: str = ""
    """Stable name of this replica; generated when empty."""
    bundles_dir: Path | None = None
    """Directory of bundle YAML files, beside the built-in catalog."""
    models_dir: Path | None = None
    """Directory of model YAML files, beside the built-in catalog."""
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    dispatch: DispatchPolicy = field(default_factory=DispatchPolicy)
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    sweep_interval_s: float = 0.25
    """How often silent workers are looked for."""
    etcd_url: str | None = None
    """etcd endpoints (`http://host:2379[,...]`); None runs the embedded in-memory store (one router)."""
    store_prefix: str = DEFAULT_PREFIX
    """Key prefix of this mesh in the store, so several meshes can share one etcd."""
    drain_grace_s: float = 10.0
    """Time in-flight requests get to finish when the router drains."""
    advertise_address: str = ""
    """`host:port` workers dial to reach this replica, published in `routers/{router_id}`;
    empty: the bind address (this host's address when binding a wildcard)."""
    replica: ReplicaConfig = field(default_factory=ReplicaConfig)
    """Lease, fencing and leadership of this replica in the replica set (see `mesh.ha`)."""
    pools: PoolsConfig = field(default_factory=PoolsConfig)
    """Tenant pools: spec limits, store deadlines, pacing of the leader's assignment loop."""
    config_api: ConfigServiceConfig = field(default_factory=ConfigServiceConfig)
    """Config API behaviour; `ConfigServiceConfig.from_env()` reads SIE_CONFIG_RESTORE."""
    config_store_dir: Path | None = None
    """SIE_CONFIG_STORE_DIR: with no etcd, keep API-added model configs in this directory."""


class LocalMeshService:
    """`MeshService` served by this router's own dispatcher (no network hop)."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self._dispatcher = router.dispatcher
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.accepting = True

    async def _run(self, operation: str, request, *, timeout_s: float | None, request_id: str):
        if not self.accepting:
            raise MeshError(ErrorCode.NOT_READY, "router is draining")
        self.in_flight += 1
        self._idle.clear()
        try:
            response = await self._dispatcher.dispatch(
                operation, request, timeout_s=timeout_s, request_id=request_id
            )
            self._router.rate.mark()
            return response
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def encode(
        self, request: inference_pb2.EncodeRequest, *, timeout_s: float | None, request_id: str
    ) -> inference_pb2.EncodeResponse:
        return await self._run("encode", request, timeout_s=timeout_s, request_id=request_id)

    async def score(
        self, request: inference_pb2.ScoreRequest, *, timeout_s: float | None, request_id: str
    ) -> inference_pb2.ScoreResponse:
        return await self._run("score", request, timeout_s=timeout_s, request_id=request_id)

    async def extract(
        self, request: inference_pb2.ExtractRequest, *, timeout_s: float | None, request_id: str
    ) -> inference_pb2.ExtractResponse:
        return await self._run("extract", request, timeout_s=timeout_s, request_id=request_id)

    async def cluster_health(self) -> cluster_pb2.ClusterHealth:
        return self._router.cluster_health()

    async def pending_demand(self) -> list[cluster_pb2.PendingDemand]:
        return self._router.pending_demand()

    async def list_models(self) -> cluster_pb2.ListModelsResponse:
        return cluster_pb2.ListModelsResponse(models=self._router.model_summaries())

    async def get_model(self, model: str) -> cluster_pb2.ModelSummary:
        return self._router.find_model(model)

    def ready(self) -> bool:
        return self.accepting and self._router.serving


class Router:
    def __init__(
        self,
        config: RouterConfig,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        catalog: Catalog | None = None,
        store: CoordinationStore | None = None,
        config_store: ConfigStore | None = None,
    ) -> None:
        self.config = config
        self.store = store or open_store(config.etcd_url, config.store_prefix)
        """Shared state replicas agree on (etcd), or the embedded memory store."""
        self.router_id = config.router_id or default_router_id(config.port)
        self.clock = clock or SystemClock()
        self._catalog = catalog or load_catalog(config.bundles_dir, config.models_dir)
        self.registry = WorkerRegistry(self.clock)
        self.dispatcher = Dispatcher(
            self.registry,
            lambda: self._catalog,
            router_id=self.router_id,
            routing_policy=config.routing,
            policy=config.dispatch,
            clock=self.clock,
            rng=rng or random.Random(),
        )
        self.rate = RateMeter(self.clock)
        self.config_epoch = 0
        self.service = LocalMeshService(self)
        self.config_service = ConfigService(
            config_store or open_config_store(self.store, store_dir=config.config_store_dir),
            registry=self.registry,
            router_id=self.router_id,
            catalog=self._catalog,
            on_change=self._config_changed,
            settings=config.config_api,
            rng=rng,
        )
        """The Config API (in-process `ConfigApi`): owns config changes to the catalog."""
        self.registry_service = WorkerRegistryService(
            self.registry,
            router_id=self.router_id,
            settings=config.registry,
            config_epoch=lambda: self.config_epoch,
            on_config_ack=self.config_service.on_config_ack,
            on_attach=self.config_service.on_attach,
        )
        self.replica = Replica(
            self.store,
            router_id=self.router_id,
            config=config.replica,
            clock=self.clock if hasattr(self.clock, "sleep") else SystemSleepClock(),  # type: ignore[arg-type]
            wall_clock=self.clock,
        )
        """This router as a member of the replica set: its lease, registrations, fences, leadership."""
        self.registry_service.add_session_listener(self.replica.membership)
        self.registry_service.set_fence_gate(self.replica.membership.is_fenced)
        self.replica.membership.bind_registry(self.registry_service.fence_incarnation)
        self.pools = RouterPools(
            self.store,
            self.registry,
            clock=self.clock if hasattr(self.clock, "sleep") else SystemSleepClock(),  # type: ignore[arg-type]
            config=config.pools,
            leadership=self.replica.leadership,
            bundle_exists=lambda bundle: self._catalog.bundle(bundle) is not None,
        )
        """Tenant pools; `pools.service` is the in-process `PoolsApi` (mesh.v1.Pools, /v1/pools)."""
        self.health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task] = []
        self.port = 0
        self.serving = False

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def _config_changed(self, catalog: Catalog, epoch: int) -> None:
        # The dispatcher reads the catalog through a callable: this swap is the switch-over.
        self._catalog = catalog
        self.config_epoch = epoch

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    @property
    def advertise_address(self) -> str:
        """What workers and peers dial to reach this replica (see `RouterConfig.advertise_address`)."""
        return self.config.advertise_address or default_advertise_address(self.config.host, self.port)

    @property
    def leadership(self) -> Leadership:
        """Singleton loops run here only while this replica leads; see `mesh.ha.leadership`."""
        return self.replica.leadership

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        # Never blocks on an unreachable etcd: routing runs from memory and
        # only shared-state writes wait for the store.
        await self.store.start()
        server = grpc.aio.server(options=SERVER_OPTIONS)
        registry_pb2_grpc.add_WorkerRegistryServicer_to_server(self.registry_service, server)
        inference_pb2_grpc.add_InferenceServicer_to_server(InferenceService(self.service), server)
        cluster_pb2_grpc.add_ClusterServicer_to_server(ClusterService(self), server)
        add_config_servicer(self.config_service, server)
        add_pools_servicer(self.pools.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        host = self.config.host
        bind_host = f"[{host}]" if ":" in host else host
        try:
            self.port = server.add_insecure_port(f"{bind_host}:{self.config.port}")
        except RuntimeError:  # grpc reports a taken or invalid address this way
            self.port = 0
        if self.port == 0:
            await self.store.close()
            raise OSError(f"cannot listen on {host}:{self.config.port} (address in use or not local)")
        # Restored before the server accepts anyone, so no worker or client sees
        # the catalog without its API-added models (bounded: degrades, never hangs).
        await self.config_service.start()
        # Pool assignments reach routing before any worker can attach (never waits for the store).
        await self.pools.start()
        await server.start()
        self._server = server
        self.serving = True
        for service in ("", INFERENCE_SERVICE, REGISTRY_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._tasks.append(asyncio.create_task(self._sweep_silent(), name="sweep-silent"))
        # Advertised only once serving, so whoever finds it can dial it.
        await self.replica.start(self.advertise_address)
        log.info("router %s serving gRPC on %s", self.router_id, self.address)

    async def _sweep_silent(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            for worker_id in self.registry_service.eject_silent():
                log.warning("worker %s ejected: silent past the timeout", worker_id)

    async def drain(self, grace_s: float | None = None) -> None:
        """Readiness off, then refuse new requests and let in-flight ones finish."""
        grace = self.config.drain_grace_s if grace_s is None else grace_s
        for service in (INFERENCE_SERVICE, REGISTRY_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.service.accepting = False
        self.registry_service.accepting = False
        # Revoking the lease removes this replica's keys (registration, its
        # workers', leadership) at once: workers and peers act now, not a TTL later.
        await self.replica.release()
        if not await self.service.wait_idle(grace):
            log.warning("drain: %d requests still in flight after %.1f s", self.service.in_flight, grace)

    async def stop(self, grace_s: float = 1.0) -> None:
        if self._server is None:
            return
        self.serving = False
        await self.health.enter_graceful_shutdown()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.registry_service.close_all("router stopping")
        await self._server.stop(grace_s)
        self._server = None
        await self.config_service.stop()
        await self.pools.stop()
        await self.replica.stop()
        await self.store.close()
        log.info("router %s stopped", self.router_id)

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    # -- views ---------------------------------------------------------------

    def cluster_health(self) -> cluster_pb2.ClusterHealth:
        return cluster_health(
            list(self.registry),
            self._catalog,
            router_id=self.router_id,
            clock=self.clock,
            total_qps=self.rate.rate(),
            config_epoch=self.config_epoch,
            store_connected=self.store.connected,
            config_bootstrap_degraded=self.config_service.bootstrap_degraded,
            config_deltas=[
                cluster_pb2.EventCount(kind=kind, result=result, count=count)
                for (kind, result), count in sorted(self.config_service.stats.deltas.items())
            ],
            pool_events=[
                cluster_pb2.EventCount(kind=event, count=count)
                for event, count in sorted(self.pools.events().items())
            ],
        )

    def pending_demand(self) -> list[cluster_pb2.PendingDemand]:
        rows = []
        for (profile, bundle, pool), entry in self.dispatcher.demand.items():
            row = cluster_pb2.PendingDemand(
                machine_profile=profile, bundle=bundle, pool=pool, requests=entry.requests
            )
            row.last_seen.FromNanoseconds(int(entry.last_seen_wall_s * 1e9))
            rows.append(row)
        return rows

    def model_summaries(self) -> list[cluster_pb2.ModelSummary]:
        return model_summaries(list(self.registry), self._catalog)

    def find_model(self, model: str) -> cluster_pb2.ModelSummary:
        return find_model(self.model_summaries(), self._catalog, model)

    def drain_worker(self, worker_id: str, grace_s: float) -> bool:
        session = self.registry.get(worker_id)
        if session is None or session.closed:
            return False
        session.set_draining()
        session.send(
            registry_pb2.RouterMessage(
                drain=registry_pb2.Drain(reason="drain requested", grace_ms=int(max(grace_s, 0) * 1000))
            )
        )
        return True
