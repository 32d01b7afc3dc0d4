"""Plain, immutable inputs and outputs of the routing decision."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class ModelState(str, enum.Enum):
    AVAILABLE = "available"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ModelLoad:
    """One model as one worker last reported it."""

    state: ModelState
    queue_depth: int = 0
    """Requests queued or running for this model on the worker."""
    pending_items: int = 0


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A worker as routing sees it: one immutable row of a registry snapshot."""

    worker_id: str
    instance_uid: str = ""
    bundle: str = "default"
    machine_profile: str = ""
    """Lower-cased machine profile (GPU type)."""
    pool: str = ""
    """Pool the worker is reserved for; "" when it serves the shared fleet."""
    ready: bool = True
    draining: bool = False
    fenced: bool = False
    ejected: bool = False
    """Taken out by the router (silent past the timeout, stream closing)."""
    saturated: bool = False
    queue_depth: int = 0
    """Requests queued on the worker plus those the router sent and is awaiting."""
    queue_capacity: int = 0
    """Most requests the worker queues; 0 when unknown."""
    max_batch_requests: int = 1
    gpu_count: int = 1
    models: Mapping[str, ModelLoad] = field(default_factory=dict)
    """Keyed by lower-cased model id."""
    backend: str = ""

    @property
    def healthy(self) -> bool:
        return self.ready and not (self.draining or self.fenced or self.ejected)


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What one request needs from a worker."""

    model_id: str
    """Lower-cased canonical model id."""
    bundles: tuple[str, ...]
    """Bundles that can serve the model, preferred first (lowest priority number)."""
    machine_profile: str = ""
    """Wanted machine profile, lower-cased; "" for any."""
    pool: str = ""
    """Explicit pool, lower-cased; "" for the shared fleet."""
    exclude: frozenset[str] = frozenset()
    """Worker ids already tried for this request."""
