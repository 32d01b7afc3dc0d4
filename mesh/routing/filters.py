"""Filters: each keeps the workers that can take the request and drops the rest.

A filter reads one aspect of a `WorkerView` and works on the whole candidate
list at once (a list comprehension per stage is the cheapest loop CPython
has). `pick_workers` runs them in `DEFAULT_FILTERS` order and, when one
leaves nothing, reports that filter's `RejectionReason`.

Order only changes which reason is reported, never who survives. It runs from
structural (what capacity exists: pool, machine profile, bundle) to transient
(health, model load failures, already tried), so the reason names the most specific thing that is
missing: "pool 'a' has l4 workers but none is ready" says more than
"no l4 worker", and an autoscaler keyed on (machine profile, bundle) sees
demand only where capacity is truly absent or down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from mesh.routing.rejection import RejectionReason
from mesh.routing.types import ModelState, RouteRequest, WorkerView


def _same_name(value: str, wanted_lower: str) -> bool:
    # Registry rows are lower-cased already; compare first, fold only on a
    # length match, so the common miss costs no allocation.
    return value == wanted_lower or (len(value) == len(wanted_lower) and value.lower() == wanted_lower)


@dataclass(frozen=True, slots=True)
class RouteQuery:
    """A RouteRequest normalised once per decision, so filters and scorers
    compare plain strings instead of folding case per worker."""

    request: RouteRequest
    """The request as given."""
    model_key: str
    """Lower-cased model id (the key of `WorkerView.models`)."""
    machine_profile: str
    """Lower-cased wanted machine profile; "" for any."""
    pool: str
    """Lower-cased explicit pool; "" for the shared fleet."""
    bundle_rank: Mapping[str, int]
    """Lower-cased bundle -> preference (0 = preferred) for every bundle that can serve."""

    @classmethod
    def of(cls, request: RouteRequest) -> RouteQuery:
        rank: dict[str, int] = {}
        for index, bundle in enumerate(request.bundles):
            rank.setdefault(bundle.lower(), index)
        return cls(
            request=request,
            model_key=request.model_id.lower(),
            machine_profile=request.machine_profile.lower(),
            pool=request.pool.lower(),
            bundle_rank=rank,
        )

    def bundle_rank_of(self, worker: WorkerView) -> int | None:
        """The worker's bundle preference; None when its bundle cannot serve the model."""
        rank = self.bundle_rank.get(worker.bundle)
        if rank is None and worker.bundle:
            rank = self.bundle_rank.get(worker.bundle.lower())
        return rank


class WorkerFilter(Protocol):
    """A filter plug-in."""

    name: str

    def rejection(self, query: RouteQuery) -> RejectionReason:
        """The reason reported when this filter removes the last candidate."""
        ...

    def __call__(self, workers: list[WorkerView], query: RouteQuery) -> list[WorkerView]:
        """The workers that pass, in input order (may return `workers` itself when all pass)."""
        ...


class PoolFilter:
    """Pool isolation, both ways.

    Reads `WorkerView.pool` and `RouteRequest.pool`. A request naming a pool
    goes only to workers assigned to that pool; a request without one never
    goes to a worker reserved by a pool. Trade-off: a tenant's idle reserved
    workers are never borrowed by shared traffic, and a tenant's pool never
    overflows into the shared fleet: isolation is the product, utilisation
    is the price.
    """

    name = "pool"

    def rejection(self, query: RouteQuery) -> RejectionReason:
        return RejectionReason.POOL_EMPTY if query.pool else RejectionReason.NO_SHARED_WORKER

    def __call__(self, workers: list[WorkerView], query: RouteQuery) -> list[WorkerView]:
        pool = query.pool
        if pool:
            return [w for w in workers if _same_name(w.pool, pool)]
        return [w for w in workers if not w.pool]


class MachineProfileFilter:
    """Machine profile (GPU type), case-insensitive; "" in the request means any.

    Reads `WorkerView.machine_profile`. Hard constraint: a caller that asks for
    `l4` is pinning cost or latency, so no fallback to another profile.
    """

    name = "machine_profile"

    def rejection(self, query: RouteQuery) -> RejectionReason:
        return RejectionReason.NO_MACHINE_PROFILE

    def __call__(self, workers: list[WorkerView], query: RouteQuery) -> list[WorkerView]:
        wanted = query.machine_profile
        if not wanted:
            return workers
        return [w for w in workers if _same_name(w.machine_profile, wanted)]


class BundleFilter:
    """Bundle compatibility: the worker's bundle ships the model's adapter.

    Reads `WorkerView.bundle` against `RouteRequest.bundles` (the catalog's
    compatible bundles, preferred first, or the one `bundle:/` override).
    Keeps every compatible bundle; preference between them is applied by the
    picker as a tier, not here, so fallbacks can cross to the next bundle.
    """

    name = "bundle"

    def rejection(self, query: RouteQuery) -> RejectionReason:
        return RejectionReason.NO_BUNDLE

    def __call__(self, workers: list[WorkerView], query: RouteQuery) -> list[WorkerView]:
        return [w for w in workers if query.bundle_rank_of(w) is not None]


class HealthyFilter:
    """Ready and not draining, fenced or ejected (`WorkerView.healthy`).

    Reads the registry's view of the stream: a closed or silent stream has
    already ejected the worker, so this never waits on a lease.
    """

    name = "healthy"

    def rejection(self, query: RouteQuery) -> RejectionReason:
        return RejectionReason.NO_HEALTHY_WORKER

    def __call__(self, workers: list[WorkerView], query: RouteQuery) -> list[WorkerView]:
        return [w for w in workers if w.healthy]


class ModelLoadFailedFilter:
    """Drops workers that report the model FAILED to load.

    Reads `WorkerView.models[model].state`. Such a worker answers
    MODEL_LOAD_FAILED, which is final for the caller, so sending it a request
    would turn a worker-local failure into a client-visible one while other
    workers could still load the model. When every candidate failed, the
    rejection says so and the caller gets MODEL_LOAD_FAILED, not a wait for
    capacity that would never help.
    """

    name = "model_load_failed"

    def rejection(self, query: RouteQuery) -> RejectionReason:
        return RejectionReason.MODEL_LOAD_FAILED

    def __call__(self, workers: list[WorkerView], query: RouteQuery) -> list[WorkerView]:
        key, failed = query.model_key, ModelState.FAILED
        return [w for w in workers if (load := w.models.get(key)) is None or load.state is not failed]


class ExcludeFilter:
    """Drops workers already tried for this request (`RouteRequest.exclude`).

    Last among the filters so that, when retries have used up every eligible
    worker, the reason says so instead of blaming capacity.
    """

    name = "exclude"

    def rejection(self, query: RouteQuery) -> RejectionReason:
        return RejectionReason.ALL_EXCLUDED

    def __call__(self, workers: list[WorkerView], query: RouteQuery) -> list[WorkerView]:
        exclude = query.request.exclude
        if not exclude:
            return workers
        return [w for w in workers if w.worker_id not in exclude]


DEFAULT_FILTERS: tuple[WorkerFilter, ...] = (
    PoolFilter(),
    MachineProfileFilter(),
    BundleFilter(),
    HealthyFilter(),
    ModelLoadFailedFilter(),
    ExcludeFilter(),
)
