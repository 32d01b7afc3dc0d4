"""The routing decision: pure, table-tested, no I/O.

`pick_workers(workers, request, policy, rng)` filters a registry snapshot
(pool, machine profile, bundle, health, model load failures, already tried), scores what is left
(model affinity with spill, queue load), and returns a primary plus ordered
fallbacks, or a `Rejection` naming the stage that emptied the set. Its two
halves are public too: `eligible_workers` (the filters, which read fleet state
only) and `rank_workers` (the scorers and the pick, which read load).
"""

from mesh.routing.decision import RouteDecision, eligible_workers, pick_workers, rank_workers
from mesh.routing.filters import (
    DEFAULT_FILTERS,
    BundleFilter,
    ExcludeFilter,
    HealthyFilter,
    MachineProfileFilter,
    ModelLoadFailedFilter,
    PoolFilter,
    RouteQuery,
    WorkerFilter,
)
from mesh.routing.policy import RoutingPolicy
from mesh.routing.rejection import Rejection, RejectionReason
from mesh.routing.scorers import (
    MODEL_AFFINITY,
    QUEUE_LOAD,
    ModelAffinityScorer,
    QueueLoadScorer,
    Tier,
    WorkerScorer,
    is_saturated,
    load_fraction,
)
from mesh.routing.types import ModelLoad, ModelState, RouteRequest, WorkerView

__all__ = [
    "DEFAULT_FILTERS",
    "MODEL_AFFINITY",
    "QUEUE_LOAD",
    "BundleFilter",
    "ExcludeFilter",
    "HealthyFilter",
    "MachineProfileFilter",
    "ModelAffinityScorer",
    "ModelLoad",
    "ModelLoadFailedFilter",
    "ModelState",
    "PoolFilter",
    "QueueLoadScorer",
    "Rejection",
    "RejectionReason",
    "RouteDecision",
    "RouteQuery",
    "RouteRequest",
    "RoutingPolicy",
    "Tier",
    "WorkerFilter",
    "WorkerScorer",
    "WorkerView",
    "eligible_workers",
    "is_saturated",
    "load_fraction",
    "pick_workers",
    "rank_workers",
]
