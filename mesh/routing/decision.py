"""`pick_workers`: filters, then scorers, then a pick of a primary plus fallbacks.

Pure: no awaits, clocks or globals; randomness comes in as `random.Random`.
It runs per request over a registry snapshot of up to a few hundred workers,
so each stage is one pass over a list, each candidate's rank is one float,
and only candidates that can make the cut are sorted.

Ordering of the candidates that survive the filters, most preferred first:

1. unsaturated before saturated. Saturated workers stay in the list as the
   last fallbacks (a queue drains in milliseconds, and QUEUE_FULL is a cheap
   retryable answer), but are never the primary while an unsaturated worker
   exists. When every candidate is saturated the decision is ALL_SATURATED.
2. bundle tier: the first bundle of `RouteRequest.bundles` (lowest priority
   number) that has an unsaturated candidate wins, as in the SIE router,
   which picks the first bundle in priority order with a healthy worker.
   Later bundles follow as fallbacks, so a retry can cross to them.
3. weighted score within the tier (model affinity, queue load; see scorers).
4. a random draw, so equal workers share the load instead of the first in
   the snapshot taking everything.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from mesh.routing.filters import DEFAULT_FILTERS, RouteQuery
from mesh.routing.policy import RoutingPolicy
from mesh.routing.rejection import Rejection, RejectionReason
from mesh.routing.scorers import Tier, is_saturated, weighted_scorers
from mesh.routing.types import RouteRequest, WorkerView


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The outcome: a primary and ordered fallbacks, or why there is none."""

    primary: WorkerView | None = None
    """The worker to try first; None when rejected."""
    fallbacks: tuple[WorkerView, ...] = ()
    """Workers to try next, in order; never the primary, never repeated."""
    rejection: Rejection | None = None
    """Set exactly when `primary` is None."""

    @property
    def attempts(self) -> tuple[WorkerView, ...]:
        """Primary then fallbacks: the order in which a dispatcher tries them."""
        if self.primary is None:
            return ()
        return (self.primary, *self.fallbacks)


def _rejected(reason: RejectionReason, query: RouteQuery) -> RouteDecision:
    request = query.request
    return RouteDecision(
        rejection=Rejection(
            reason=reason,
            model_id=query.model_key,
            machine_profile=query.machine_profile,
            bundle=request.bundles[0] if request.bundles else "",
            pool=query.pool,
        )
    )


def pick_workers(
    workers: Sequence[WorkerView],
    request: RouteRequest,
    policy: RoutingPolicy,
    rng: random.Random,
) -> RouteDecision:
    """Choose where `request` runs. See the module docstring for the order."""
    query = RouteQuery.of(request)
    eligible = eligible_workers(workers, query)
    if isinstance(eligible, RouteDecision):
        return eligible
    return rank_workers(eligible, query, policy, rng)


def eligible_workers(workers: Sequence[WorkerView], query: RouteQuery) -> list[WorkerView] | RouteDecision:
    """The workers every filter keeps, or the rejection naming the stage that emptied the set.

    Filters read fleet state only (pool, profile, bundle, health, model
    state), never queue depth: the answer holds for as long as the fleet is
    unchanged, so a dispatcher may keep it and rank fresh views of the same
    workers per request (`rank_workers`).
    """
    candidates = workers if isinstance(workers, list) else list(workers)
    for stage in DEFAULT_FILTERS:
        candidates = stage(candidates, query)
        if not candidates:
            return _rejected(stage.rejection(query), query)
    return candidates


def rank_workers(
    candidates: list[WorkerView], query: RouteQuery, policy: RoutingPolicy, rng: random.Random
) -> RouteDecision:
    """Primary and fallbacks among `candidates`, workers that passed `eligible_workers`."""
    if len(candidates) == 1:
        # One eligible worker (a small fleet, a pinned pool): nothing to rank.
        (only,) = candidates
        if is_saturated(only):
            return _rejected(RejectionReason.ALL_SATURATED, query)
        return RouteDecision(primary=only)

    tiers = [Tier(rank) for rank in range(len(query.request.bundles))]
    assumed_batches = policy.assumed_queue_batches
    bundle_rank = query.bundle_rank
    for worker in candidates:
        # load_fraction and is_saturated inlined: this loop is the hot path.
        rank = bundle_rank.get(worker.bundle)
        tier = tiers[rank if rank is not None else query.bundle_rank_of(worker)]  # type: ignore[index]
        depth, capacity = worker.queue_depth, worker.queue_capacity
        if capacity > 0:
            tier.loads.append(depth / capacity)
            tier.saturated.append(worker.saturated or depth >= capacity)
        else:
            batch = worker.max_batch_requests
            tier.loads.append(depth / ((batch if batch > 0 else 1) * assumed_batches))
            tier.saturated.append(worker.saturated)
        tier.workers.append(worker)

    scorers = weighted_scorers(policy)
    # One float per candidate orders it: (group, -score) folded as
    # group * stride - score, where group is the tier, pushed past every tier
    # when saturated. stride exceeds any weighted score, so groups never
    # interleave. Floats keep the hot loop free of per-worker tuples; the
    # random tie-break is drawn only for candidates that can make the cut.
    stride = float(math.floor(sum(weight for _, weight in scorers)) + 1)
    saturated_offset = len(tiers)
    keys: list[float] = []
    flat: list[WorkerView] = []
    any_unsaturated = False
    for tier in tiers:
        if not tier.workers:
            continue
        totals: list[float] | None = None
        for scorer, weight in scorers:
            scores = scorer(tier, query, policy)
            if totals is None:
                totals = [weight * score for score in scores]
            else:
                totals = [total + weight * score for total, score in zip(totals, scores)]
        if totals is None:  # every weight is zero: only tiers and the draw decide
            totals = [0.0] * len(tier.workers)
        any_unsaturated = any_unsaturated or not all(tier.saturated)
        rank = tier.rank
        keys.extend(
            [
                (rank + saturated_offset if saturated else rank) * stride - total
                for total, saturated in zip(totals, tier.saturated)
            ]
        )
        flat.extend(tier.workers)
    if not any_unsaturated:
        return _rejected(RejectionReason.ALL_SATURATED, query)

    wanted = 1 + policy.max_fallbacks
    chosen = _best_distinct(keys, flat, wanted, rng)
    if len(chosen) < wanted and len(chosen) < len(flat):
        # Duplicate rows filled part of the cut; rank everything instead.
        chosen = _best_distinct(keys, flat, len(flat), rng)[:wanted]
    return RouteDecision(primary=chosen[0], fallbacks=tuple(chosen[1:]))


def _best_distinct(
    keys: list[float], workers: list[WorkerView], count: int, rng: random.Random
) -> list[WorkerView]:
    """The `count` best workers by key, equal keys in random order, each worker id once."""
    draw = rng.random
    if len(keys) > count:
        cutoff = heapq.nsmallest(count, keys)[-1]
        ahead = [i for i, key in enumerate(keys) if key < cutoff]
        ahead.sort(key=lambda i: (keys[i], draw()))
        # Equal keys at the cut (all idle, identical workers) can be most of
        # the fleet: sample the few needed instead of ordering them all.
        tied = [i for i, key in enumerate(keys) if key == cutoff]
        contenders = ahead + rng.sample(tied, min(len(tied), count - len(ahead)))
    else:
        contenders = list(range(len(keys)))
        contenders.sort(key=lambda i: (keys[i], draw()))
    chosen: list[WorkerView] = []
    seen: set[str] = set()
    for i in contenders:
        worker = workers[i]
        if worker.worker_id in seen:  # a duplicate row in a snapshot is not a second chance
            continue
        seen.add(worker.worker_id)
        chosen.append(worker)
        if len(chosen) == count:
            break
    return chosen
