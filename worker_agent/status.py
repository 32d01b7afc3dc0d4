"""What a worker reports about itself, as plain data, and its wire form."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.routing.types import ModelState
from mesh.v1 import registry_pb2

_STATE_TO_PROTO = {
    ModelState.AVAILABLE: registry_pb2.MODEL_STATE_AVAILABLE,
    ModelState.LOADING: registry_pb2.MODEL_STATE_LOADING,
    ModelState.LOADED: registry_pb2.MODEL_STATE_LOADED,
    ModelState.UNLOADING: registry_pb2.MODEL_STATE_UNLOADING,
    ModelState.FAILED: registry_pb2.MODEL_STATE_FAILED,
}


@dataclass(frozen=True, slots=True)
class ModelReport:
    """One model of the bundle as this worker holds it."""

    model_id: str
    state: ModelState
    queue_depth: int = 0
    """Tasks queued or running for the model."""
    pending_items: int = 0
    """Items inside those tasks."""
    memory_bytes: int = 0
    error: str = ""
    """Why the last load failed, when state is FAILED."""


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """A snapshot of the agent, as routers see it in Status."""

    ready: bool
    """Serving: started, preloaded when asked to, not draining."""
    draining: bool
    bundle: str
    machine_profile: str
    pool: str
    gpu_count: int
    max_batch_requests: int
    bundle_config_hash: str
    queue_capacity: int
    queued: int
    """Tasks waiting to run (running ones excluded)."""
    models: tuple[ModelReport, ...]

    @property
    def saturated(self) -> bool:
        return self.queued >= self.queue_capacity

    def model(self, model_id: str) -> ModelReport | None:
        wanted = model_id.lower()
        return next((model for model in self.models if model.model_id.lower() == wanted), None)


def status_to_proto(status: AgentStatus, seq: int) -> registry_pb2.WorkerStatus:
    return registry_pb2.WorkerStatus(
        ready=status.ready,
        bundle=status.bundle,
        machine_profile=status.machine_profile,
        pool=status.pool,
        gpu_count=status.gpu_count,
        max_batch_requests=status.max_batch_requests,
        bundle_config_hash=status.bundle_config_hash,
        saturated=status.saturated,
        draining=status.draining,
        models=[
            registry_pb2.ModelStatus(
                name=model.model_id,
                state=_STATE_TO_PROTO[model.state],
                queue_depth=model.queue_depth,
                queue_pending_items=model.pending_items,
                memory_bytes=model.memory_bytes,
                error=model.error,
            )
            for model in status.models
        ],
        queue_capacity=status.queue_capacity,
        seq=seq,
    )
