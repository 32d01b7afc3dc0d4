"""Which workers each tenant pool holds: the pure assignment decision.

`assign_pools(pools, workers)` reads the pools (spec + current assignment)
and the fleet (healthy workers anywhere in the mesh) and returns, per pool,
the workers it holds and whether it is active. No I/O, no clock, no
randomness: the same inputs in any order give the same answer, so every
leader that ever runs it agrees with the last one.

Rules, in the order they are applied:

1. Eligibility. A worker can be held by pool P when it is healthy, its
   machine profile is one P allows (those named in `gpus` / `gpu_caps`;
   any when P names none), its bundle is P's bundle (when P has one), and it
   is not statically reserved (`--pool`) for another pool.
2. Exclusivity. A worker is held by at most one pool.
3. Stability first. Each pool keeps the eligible workers it already holds,
   up to what it needs; nobody is pre-empted to satisfy an older or larger
   pool. Moving a tenant's worker costs the tenant its warm models.
4. Then fill, oldest pool first (created_at, then name): per profile, up to
   `gpus[profile]`; then up to `minimum_worker_count` in all, from any
   allowed profile, never above `gpu_caps`. Free workers statically
   reserved for the pool come first, then the rest by id.
5. A pool is ACTIVE when every `gpus` requirement and `minimum_worker_count`
   is met by the workers it holds, PENDING otherwise. Workers of a deleted
   or expired pool are simply not in the input: they are free again.

Trade-off: assignment is exact, not greedy. A pool holds what it asked
for and no more, so the shared fleet keeps every worker no pool needs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mesh.pools.spec import PoolSpec


class PoolState(str, enum.Enum):
    """A pool's state as the reference spells it."""

    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class FleetWorker:
    """One worker as pool assignment sees it, wherever in the mesh it is connected."""

    worker_id: str
    machine_profile: str
    """Lower-case."""
    bundle: str = "default"
    """Lower-case."""
    static_pool: str = ""
    """Pool the worker reserves itself for (`--pool`), lower-case; "" for none."""
    healthy: bool = True
    """Ready and not draining, fenced or ejected."""
    url: str = ""
    """Where the worker can be reached, when known (workers dial the routers, so usually "")."""


@dataclass(frozen=True, slots=True)
class PoolClaim:
    """One pool as assignment needs it."""

    spec: PoolSpec
    assigned: tuple[str, ...] = ()
    """Worker ids the pool holds now (from the store)."""
    created_at_s: float = 0.0
    """Wall-clock creation time: older pools fill first."""

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class PoolAssignment:
    """What one pool holds after a decision."""

    name: str
    workers: tuple[str, ...]
    """Worker ids, sorted."""
    state: PoolState
    missing: Mapping[str, int] = field(default_factory=dict)
    """Profile -> workers still wanted ("*" for the minimum_worker_count shortfall); empty when active."""


@dataclass(frozen=True, slots=True)
class AssignmentPlan:
    """The decision for every pool."""

    pools: Mapping[str, PoolAssignment]
    """Pool name -> its assignment, for every pool of the input."""

    def pool_of(self) -> dict[str, str]:
        """Worker id -> the pool holding it."""
        return {worker: name for name, assignment in self.pools.items() for worker in assignment.workers}


def eligible(worker: FleetWorker, spec: PoolSpec) -> bool:
    """Whether `spec`'s pool may hold `worker` (rule 1)."""
    if not worker.healthy:
        return False
    if worker.static_pool and worker.static_pool != spec.name:
        return False
    if spec.bundle and worker.bundle != spec.bundle:
        return False
    return spec.allows_profile(worker.machine_profile)


class _Holding:
    """One pool's workers while a decision is being built."""

    def __init__(self, claim: PoolClaim) -> None:
        self.claim = claim
        self.spec = claim.spec
        self.by_profile: dict[str, list[str]] = {}
        self.total = 0

    def count(self, profile: str) -> int:
        return len(self.by_profile.get(profile, ()))

    def wants_for_profile(self, profile: str) -> int:
        """Workers of `profile` still needed by `gpus`."""
        return max(0, self.spec.gpus.get(profile, 0) - self.count(profile))

    def wants_extra(self) -> int:
        """Workers still needed by `minimum_worker_count`, once `gpus` is met."""
        committed = self.total + sum(self.wants_for_profile(p) for p in self.spec.gpus)
        return max(0, self.spec.minimum_worker_count - committed)

    def under_cap(self, profile: str) -> bool:
        cap = self.spec.cap(profile)
        return cap is None or self.count(profile) < cap

    def take(self, worker: FleetWorker) -> None:
        self.by_profile.setdefault(worker.machine_profile, []).append(worker.worker_id)
        self.total += 1

    def result(self) -> PoolAssignment:
        missing: dict[str, int] = {}
        for profile in self.spec.gpus:
            short = self.wants_for_profile(profile)
            if short:
                missing[profile] = short
        # Beyond what the gpus shortfall will bring, so "*" never counts a worker twice.
        extra_short = self.wants_extra()
        if extra_short > 0:
            missing["*"] = extra_short
        workers = tuple(sorted(w for ids in self.by_profile.values() for w in ids))
        state = PoolState.PENDING if missing else PoolState.ACTIVE
        return PoolAssignment(self.spec.name, workers, state, missing)


def _priority(claim: PoolClaim) -> tuple[float, str]:
    return (claim.created_at_s, claim.spec.name)


def assign_pools(pools: Iterable[PoolClaim], workers: Iterable[FleetWorker]) -> AssignmentPlan:
    """Decide every pool's workers; see the module docstring for the rules."""
    claims = sorted(pools, key=_priority)
    names = [claim.name for claim in claims]
    if len(set(names)) != len(names):
        raise ValueError(f"pool names must be unique, got {names}")
    fleet: dict[str, FleetWorker] = {}
    for worker in sorted(workers, key=lambda w: w.worker_id):
        # A worker reported twice (two replicas' registrations): healthy wins,
        # since any replica with a live, healthy stream can serve it.
        known = fleet.get(worker.worker_id)
        if known is None or (worker.healthy and not known.healthy):
            fleet[worker.worker_id] = worker
    holdings = [_Holding(claim) for claim in claims]
    taken: set[str] = set()

    # Rule 3: keep what each pool holds, oldest pool first when two claim one worker.
    for holding in holdings:
        for worker_id in sorted(set(holding.claim.assigned)):
            worker = fleet.get(worker_id)
            if worker is None or worker_id in taken or not eligible(worker, holding.spec):
                continue
            profile = worker.machine_profile
            if holding.wants_for_profile(profile) > 0 or (
                holding.wants_extra() > 0 and holding.under_cap(profile)
            ):
                holding.take(worker)
                taken.add(worker_id)

    # Rule 4: fill what is missing from free workers, oldest pool first.
    for holding in holdings:
        candidates = _free_candidates(fleet.values(), taken, holding.spec)
        for profile in sorted(holding.spec.gpus):
            for worker in candidates:
                if holding.wants_for_profile(profile) == 0:
                    break
                if worker.worker_id not in taken and worker.machine_profile == profile:
                    holding.take(worker)
                    taken.add(worker.worker_id)
        for worker in candidates:
            if holding.wants_extra() == 0:
                break
            if worker.worker_id not in taken and holding.under_cap(worker.machine_profile):
                holding.take(worker)
                taken.add(worker.worker_id)

    return AssignmentPlan({holding.spec.name: holding.result() for holding in holdings})


def _free_candidates(fleet: Iterable[FleetWorker], taken: set[str], spec: PoolSpec) -> list[FleetWorker]:
    """Free workers the pool may take, its own static workers first, then by id."""
    free = [w for w in fleet if w.worker_id not in taken and eligible(w, spec)]
    return sorted(free, key=lambda w: (w.static_pool != spec.name, w.worker_id))


def assignments_changed(before: Mapping[str, Sequence[str]], plan: AssignmentPlan) -> list[str]:
    """Pools whose worker set differs from `before` (name -> worker ids), sorted."""
    return sorted(
        name
        for name, assignment in plan.pools.items()
        if tuple(sorted(before.get(name, ()))) != assignment.workers
    )
