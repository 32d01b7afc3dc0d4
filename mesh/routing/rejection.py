"""Why a routing decision found no worker, and what the caller is told."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mesh.errors import ErrorCode, MeshError


class RejectionReason(str, enum.Enum):
    """The filter stage that emptied the candidate set (values are metric labels)."""

    POOL_EMPTY = "pool_empty"
    """An explicit pool has no worker at all."""
    NO_SHARED_WORKER = "no_shared_worker"
    """No pool given, and every worker is reserved by some pool."""
    NO_MACHINE_PROFILE = "no_machine_profile"
    """No worker of the wanted machine profile (in the pool, if any)."""
    NO_BUNDLE = "no_bundle"
    """No worker of a bundle that can serve the model."""
    NO_HEALTHY_WORKER = "no_healthy_worker"
    """Matching workers exist but none is ready (draining, fenced, ejected, not ready)."""
    MODEL_LOAD_FAILED = "model_load_failed"
    """Every matching healthy worker reports the model FAILED to load."""
    ALL_EXCLUDED = "all_excluded"
    """Every matching healthy worker was already tried for this request."""
    ALL_SATURATED = "all_saturated"
    """Every remaining worker reports a full queue."""


# Stages that mean "this capacity does not exist right now": an autoscaler can
# fix them, so on the shared fleet they answer PROVISIONING.
_MISSING_CAPACITY = frozenset(
    {
        RejectionReason.NO_SHARED_WORKER,
        RejectionReason.NO_MACHINE_PROFILE,
        RejectionReason.NO_BUNDLE,
        RejectionReason.NO_HEALTHY_WORKER,
    }
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """No candidate: which stage emptied the set, and for which capacity."""

    reason: RejectionReason
    """The stage that removed the last candidate."""
    model_id: str
    """The model asked for (lower-cased)."""
    machine_profile: str
    """Wanted machine profile; "" for any."""
    bundle: str
    """The preferred bundle: the one capacity should be added for."""
    pool: str
    """The explicit pool; "" for the shared fleet."""

    @property
    def is_missing_capacity(self) -> bool:
        """True when this is provisioning: shared fleet, capacity absent. A pinned
        pool never is (the tenant owns that capacity), nor is a full queue."""
        return not self.pool and self.reason in _MISSING_CAPACITY

    @property
    def message(self) -> str:
        where = f"machine profile '{self.machine_profile}'" if self.machine_profile else "any machine profile"
        scope = f"pool '{self.pool}'" if self.pool else "the shared fleet"
        return f"{self.reason.value}: no worker for bundle '{self.bundle}', {where}, in {scope}"

    def to_error(self) -> MeshError:
        """The caller-facing error: PROVISIONING for missing shared capacity,
        POOL_UNAVAILABLE for a pinned pool, QUEUE_FULL when every candidate is
        saturated, MODEL_LOAD_FAILED when every candidate failed to load the
        model, WORKER_FAILED when every candidate was already tried."""
        if self.reason is RejectionReason.ALL_SATURATED:
            code = ErrorCode.QUEUE_FULL
        elif self.reason is RejectionReason.MODEL_LOAD_FAILED:
            code = ErrorCode.MODEL_LOAD_FAILED
        elif self.reason is RejectionReason.ALL_EXCLUDED:
            code = ErrorCode.WORKER_FAILED
        elif self.pool:
            code = ErrorCode.POOL_UNAVAILABLE
        else:
            code = ErrorCode.PROVISIONING
        return MeshError(code, self.message, machine_profile=self.machine_profile, bundle=self.bundle)
