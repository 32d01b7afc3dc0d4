"""mesh.v1 cluster protos -> the SIE gateway's health, model and status shapes."""

from __future__ import annotations

from typing import Any

from mesh.v1 import cluster_pb2, registry_pb2

_MODEL_STATES = {
    registry_pb2.MODEL_STATE_AVAILABLE: "available",
    registry_pb2.MODEL_STATE_LOADING: "loading",
    registry_pb2.MODEL_STATE_LOADED: "loaded",
    registry_pb2.MODEL_STATE_UNLOADING: "unloading",
    registry_pb2.MODEL_STATE_FAILED: "failed",
}


def worker_view(worker: cluster_pb2.WorkerSummary) -> dict[str, Any]:
    status = worker.status
    return {
        "name": worker.worker_id,
        # Workers dial the routers, so a worker has no URL of its own; the
        # field stays for the SDK's WorkerInfo and names the router holding it.
        "url": worker.router_id,
        "gpu": status.machine_profile,
        "gpu_count": status.gpu_count,
        "loaded_models": [m.name for m in status.models if m.state == registry_pb2.MODEL_STATE_LOADED],
        "queue_depth": sum(m.queue_depth for m in status.models),
        "healthy": worker.healthy,
        "bundle": status.bundle,
        "bundle_config_hash": status.bundle_config_hash,
        "memory_used_bytes": sum(g.memory_used_bytes for g in status.gpus),
        "memory_total_bytes": sum(g.memory_total_bytes for g in status.gpus),
        "pool": status.pool,
        "saturated": status.saturated,
        "draining": status.draining,
        "backend": worker.backend,
        "models": [
            {
                "name": m.name,
                "state": _MODEL_STATES.get(m.state, "available"),
                "queue_depth": m.queue_depth,
                "queue_pending_items": m.queue_pending_items,
                "memory_bytes": m.memory_bytes,
            }
            for m in status.models
        ],
    }


def model_summary_view(model: cluster_pb2.ModelSummary) -> dict[str, Any]:
    """The cluster-status form: what sie-top and /health list per model."""
    return {
        "name": model.name,
        "state": model.state or "available",
        "worker_count": model.worker_count,
        "gpu_types": list(model.gpu_types),
        "total_queue_depth": model.total_queue_depth,
    }


def model_info_view(model: cluster_pb2.ModelSummary) -> dict[str, Any]:
    """The /v1/models form (the SDK's ModelInfo, as far as the mesh knows it)."""
    state = model.state or "available"
    return {
        "name": model.name,
        "loaded": state == "loaded",
        "state": state,
        "workers": list(model.workers),
        "worker_count": model.worker_count,
        "gpu_types": list(model.gpu_types),
        "total_queue_depth": model.total_queue_depth,
        "bundles": list(model.bundles),
        "profiles": {name: {"is_default": name == "default"} for name in model.profiles},
        "aliases": [],
    }


def _cluster_summary(health: cluster_pb2.ClusterHealth) -> dict[str, Any]:
    return {
        "worker_count": health.worker_count,
        "gpu_count": health.gpu_count,
        "models_loaded": len(health.models_loaded),
        "total_qps": health.total_qps,
    }


def health_view(health: cluster_pb2.ClusterHealth) -> dict[str, Any]:
    """GET /health. `"type": "gateway"` is what the SDK's capacity calls look for."""
    return {
        "status": health.status or "no_workers",
        "type": "gateway",
        "worker_count": health.worker_count,
        "gpu_count": health.gpu_count,
        "models_loaded": list(health.models_loaded),
        "configured_gpu_types": list(health.configured_gpu_types),
        "live_gpu_types": list(health.live_gpu_types),
        "cluster": _cluster_summary(health),
        "workers": [worker_view(w) for w in health.workers],
        "models": [model_summary_view(m) for m in health.models],
        "router_id": health.router_id,
        "config_epoch": health.config_epoch,
        "store_connected": health.store_connected,
    }


def status_frame(health: cluster_pb2.ClusterHealth, now_s: float) -> dict[str, Any]:
    """One frame of WS /ws/cluster-status (the SDK's ClusterStatusMessage).

    `now_s` (Unix seconds) stands in when the mesh did not stamp the snapshot.
    """
    timestamp = health.timestamp.ToMicroseconds() / 1e6 if health.HasField("timestamp") else now_s
    return {
        "timestamp": timestamp,
        "cluster": _cluster_summary(health),
        "workers": [worker_view(w) for w in health.workers],
        "models": [model_summary_view(m) for m in health.models],
    }
