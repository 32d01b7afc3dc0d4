"""Knobs of the routing decision."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """Weights and thresholds of `pick_workers`. Validated at construction so a
    bad config fails at startup, not on the first request."""

    affinity_weight: float = 2.0
    """Weight of the model-affinity score. Above `load_weight` so a worker with
    the model loaded and room to spare always beats one that would have to load
    it (cold loads cost seconds; a queue costs milliseconds per batch)."""
    load_weight: float = 1.0
    """Weight of the queue-load score (1 for an idle worker, 0 for a full one)."""
    spill_threshold: float = 0.8
    """Load fraction at which a worker holding the model counts as nearly full.
    While any holder is below it, requests fill the holders; once every holder
    is at or above it, requests spill to workers without the model."""
    loading_affinity: float = 0.5
    """Affinity of a worker still loading the model while some holder has room:
    preferred over a cold worker (no second load), behind a ready holder."""
    assumed_queue_batches: int = 4
    """For a worker that reports no queue capacity: its capacity is taken as this
    many batches of `max_batch_requests`."""
    max_fallbacks: int = 3
    """Fallback workers returned after the primary, for retries without a second decision."""

    def __post_init__(self) -> None:
        if self.affinity_weight < 0 or self.load_weight < 0:
            raise ValueError("routing weights must be >= 0")
        if not 0 < self.spill_threshold <= 1:
            raise ValueError("spill_threshold must be in (0, 1]")
        if not 0 <= self.loading_affinity <= 1:
            raise ValueError("loading_affinity must be in [0, 1]")
        if self.assumed_queue_batches < 1:
            raise ValueError("assumed_queue_batches must be >= 1")
        if self.max_fallbacks < 0:
            raise ValueError("max_fallbacks must be >= 0")
