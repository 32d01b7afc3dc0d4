"""Scorers: each rates every candidate of one bundle tier in [0, 1]; the
picker sums them by the policy's weights and takes the highest.

A scorer sees the whole tier at once because affinity is relative: whether
a busy holder of the model should still get traffic depends on whether some
other holder has room.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from mesh.routing.filters import RouteQuery
from mesh.routing.policy import RoutingPolicy
from mesh.routing.types import ModelState, WorkerView


def load_fraction(worker: WorkerView, policy: RoutingPolicy) -> float:
    """Queue depth relative to what the worker can queue.

    Relative, not absolute, so an 8-GPU worker with 10 queued is less loaded
    than a 1-GPU worker with 5. Without a reported `queue_capacity`, the
    capacity is `assumed_queue_batches` batches of `max_batch_requests`.
    """
    capacity = worker.queue_capacity
    if capacity <= 0:
        batch = worker.max_batch_requests
        capacity = (batch if batch > 0 else 1) * policy.assumed_queue_batches
    return worker.queue_depth / capacity


def is_saturated(worker: WorkerView) -> bool:
    """The worker says its queue is full, or its reported depth has reached its capacity."""
    return worker.saturated or (worker.queue_capacity > 0 and worker.queue_depth >= worker.queue_capacity)


@dataclass(slots=True)
class Tier:
    """The candidates of one bundle, with the per-worker facts several stages
    read computed once (a decision runs per request; recomputing them per
    scorer doubled its cost)."""

    rank: int
    """Bundle preference: 0 for the first of `RouteRequest.bundles`."""
    workers: list[WorkerView] = field(default_factory=list)
    """Candidates of this bundle, in snapshot order."""
    loads: list[float] = field(default_factory=list)
    """`load_fraction` of each worker."""
    saturated: list[bool] = field(default_factory=list)
    """`is_saturated` of each worker."""

    def add(self, worker: WorkerView, policy: RoutingPolicy) -> None:
        self.workers.append(worker)
        self.loads.append(load_fraction(worker, policy))
        self.saturated.append(is_saturated(worker))


class WorkerScorer(Protocol):
    """A scorer plug-in."""

    name: str

    def __call__(self, tier: Tier, query: RouteQuery, policy: RoutingPolicy) -> list[float]:
        """One score in [0, 1] per worker of the tier, in order; higher is better."""
        ...


class ModelAffinityScorer:
    """Prefer workers that already hold the model; spill when every holder is nearly full.

    Reads `WorkerView.models[model].state`, the load fraction and saturation.
    "Holders have room" when some unsaturated worker of the tier has the model
    LOADED below `spill_threshold`.

    | model state on the worker           | holders have room | holders full / none |
    |-------------------------------------|-------------------|---------------------|
    | LOADED                              | 1                 | 0                   |
    | LOADING                             | loading_affinity  | 1                   |
    | absent, AVAILABLE, UNLOADING        | 0                 | 1                   |
    | FAILED (normally filtered earlier)  | 0                 | 0                   |

    With room, traffic fills the holders (no cold load, warm caches); once all
    are nearly full, a cold worker beats queueing behind them, and a worker
    already loading the model counts as a spill under way. Trade-off: the
    threshold is a guess at when waiting costs more than loading; a model
    with a slow load wants a higher one.
    """

    name = "model_affinity"

    def __call__(self, tier: Tier, query: RouteQuery, policy: RoutingPolicy) -> list[float]:
        key = query.model_key
        loaded_state, loading_state, failed_state = ModelState.LOADED, ModelState.LOADING, ModelState.FAILED
        states = [
            load.state if (load := worker.models.get(key)) is not None else None for worker in tier.workers
        ]
        threshold = policy.spill_threshold
        holders_have_room = any(
            state is loaded_state and not saturated and load < threshold
            for state, load, saturated in zip(states, tier.loads, tier.saturated)
        )
        if holders_have_room:
            loaded, loading, cold = 1.0, policy.loading_affinity, 0.0
        else:
            loaded, loading, cold = 0.0, 1.0, 1.0
        return [
            loaded
            if state is loaded_state
            else loading
            if state is loading_state
            else 0.0
            if state is failed_state
            else cold
            for state in states
        ]


class QueueLoadScorer:
    """Prefer the emptiest queue: 1 - load fraction, clamped to [0, 1].

    Reads `queue_depth`, `queue_capacity`, `max_batch_requests`. The depth
    includes requests this router sent and is still awaiting, so a burst of
    decisions between two status reports still spreads out. Trade-off: depth
    counts requests, not tokens; a queue of long documents looks as short as
    one of single words.
    """

    name = "queue_load"

    def __call__(self, tier: Tier, query: RouteQuery, policy: RoutingPolicy) -> list[float]:
        return [1.0 - load if load < 1.0 else 0.0 for load in tier.loads]


MODEL_AFFINITY = ModelAffinityScorer()
QUEUE_LOAD = QueueLoadScorer()


def weighted_scorers(policy: RoutingPolicy) -> tuple[tuple[WorkerScorer, float], ...]:
    """The scorers `pick_workers` runs, with their weights; zero-weight ones are skipped."""
    return tuple(
        (scorer, weight)
        for scorer, weight in ((MODEL_AFFINITY, policy.affinity_weight), (QUEUE_LOAD, policy.load_weight))
        if weight > 0
    )
