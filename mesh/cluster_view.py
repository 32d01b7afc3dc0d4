"""The fleet as one router sees it: health summary, models, request rate.

Pure functions over the registry and catalog, shared by the `Cluster` gRPC
service and the HTTP facade's /health, /v1/models and cluster-status socket.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from google.protobuf import timestamp_pb2

from mesh.catalog import Catalog
from mesh.clock import Clock
from mesh.errors import ErrorCode, MeshError
from mesh.registry import WorkerSession
from mesh.routing.types import ModelState
from mesh.v1 import cluster_pb2, registry_pb2


class RateMeter:
    """Events per second over a sliding window of whole seconds."""

    def __init__(self, clock: Clock, window_s: int = 10) -> None:
        self._clock = clock
        self._window_s = window_s
        self._buckets: collections.deque[list[int]] = collections.deque()  # [second, count]

    def mark(self, count: int = 1) -> None:
        second = int(self._clock.monotonic())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([second, count])
            self._trim(second)

    def _trim(self, now_second: int) -> None:
        while self._buckets and self._buckets[0][0] <= now_second - self._window_s:
            self._buckets.popleft()

    def rate(self) -> float:
        now_second = int(self._clock.monotonic())
        self._trim(now_second)
        return sum(count for _, count in self._buckets) / self._window_s


_STATE_RANK = {
    ModelState.LOADED: 0,
    ModelState.LOADING: 1,
    ModelState.UNLOADING: 2,
    ModelState.AVAILABLE: 3,
    ModelState.FAILED: 4,
}


def _timestamp(wall_s: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(wall_s * 1e9))
    return stamp


def worker_summary(session: WorkerSession, router_id: str) -> cluster_pb2.WorkerSummary:
    return cluster_pb2.WorkerSummary(
        worker_id=session.worker_id,
        instance_uid=session.instance_uid,
        router_id=router_id,
        backend=session.backend,
        healthy=session.view().healthy,
        status=session.status,
    )


def model_summaries(sessions: Iterable[WorkerSession], catalog: Catalog) -> list[cluster_pb2.ModelSummary]:
    """One row per model the catalog knows or a worker reports, sorted by name."""
    rows: dict[str, cluster_pb2.ModelSummary] = {}
    best_state: dict[str, ModelState] = {}
    for model in catalog.models:
        key = model.model_id.lower()
        rows[key] = cluster_pb2.ModelSummary(
            name=model.model_id,
            state="available",
            profiles=sorted(model.profiles),
            bundles=[
                b.bundle_id
                for b in catalog.bundles
                if model_is_routable(catalog, model.model_id, b.bundle_id)
            ],
        )
    for session in sessions:
        view = session.view()
        if not view.healthy:
            continue
        for name, load in view.models.items():
            row = rows.get(name)
            if row is None:
                row = rows[name] = cluster_pb2.ModelSummary(name=name, state="available")
            state = load.state
            if name not in best_state or _STATE_RANK[state] < _STATE_RANK[best_state[name]]:
                best_state[name] = state
            row.total_queue_depth += load.queue_depth
            if state is ModelState.LOADED:
                row.worker_count += 1
                row.workers.append(view.worker_id)
                if view.machine_profile and view.machine_profile not in row.gpu_types:
                    row.gpu_types.append(view.machine_profile)
    for name, state in best_state.items():
        rows[name].state = state.value
    return [rows[key] for key in sorted(rows)]


def model_is_routable(catalog: Catalog, model_id: str, bundle_id: str) -> bool:
    return any(m.model_id.lower() == model_id.lower() for m in catalog.models_for_bundle(bundle_id))


def find_model(
    summaries: list[cluster_pb2.ModelSummary], catalog: Catalog, model: str
) -> cluster_pb2.ModelSummary:
    """The summary of `model` (a model path; bundle prefix and profile ignored)."""
    resolution = catalog.resolve(model)
    key = resolution.model_id.lower()
    for row in summaries:
        if row.name.lower() == key:
            return row
    raise MeshError(ErrorCode.MODEL_NOT_FOUND, f"model '{model}' is not known")


def cluster_health(
    sessions: list[WorkerSession],
    catalog: Catalog,
    *,
    router_id: str,
    clock: Clock,
    total_qps: float,
    config_epoch: int,
    store_connected: bool,
    config_bootstrap_degraded: bool = False,
    config_deltas: Iterable[cluster_pb2.EventCount] = (),
    pool_events: Iterable[cluster_pb2.EventCount] = (),
) -> cluster_pb2.ClusterHealth:
    workers = [worker_summary(s, router_id) for s in sessions]
    healthy = [w for w in workers if w.healthy]
    if not workers:
        status = "no_workers"
    elif len(healthy) == len(workers):
        status = "healthy"
    else:
        status = "degraded"
    live_types = sorted({w.status.machine_profile.lower() for w in healthy if w.status.machine_profile})
    loaded = sorted(
        {m.name for w in healthy for m in w.status.models if m.state == registry_pb2.MODEL_STATE_LOADED}
    )
    return cluster_pb2.ClusterHealth(
        status=status,
        timestamp=_timestamp(clock.wall()),
        worker_count=len(healthy),
        gpu_count=sum(w.status.gpu_count for w in healthy),
        models_loaded=loaded,
        configured_gpu_types=sorted(
            {w.status.machine_profile.lower() for w in workers if w.status.machine_profile}
        ),
        live_gpu_types=live_types,
        total_qps=total_qps,
        workers=workers,
        models=model_summaries(sessions, catalog),
        router_id=router_id,
        config_epoch=config_epoch,
        store_connected=store_connected,
        config_bootstrap_degraded=config_bootstrap_degraded,
        config_deltas=list(config_deltas),
        pool_events=list(pool_events),
    )
