"""Dispatch: resolve a request, pick workers, send the task down a worker's stream.

One decision per request returns a primary and ordered fallbacks. When the
primary fails before answering (its stream closes, its queue is full, the
model is still loading there), the next candidate gets the task, within the
request's deadline, a bounded number of attempts and a retry budget shared by
all requests so retries cannot multiply load during an outage.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from mesh.catalog import Catalog, Resolution
from mesh.clock import Clock
from mesh.errors import ErrorCode, MeshError
from mesh.registry import OutboundTask, WorkerRegistry, WorkerSession
from mesh.routing import (
    Rejection,
    RouteDecision,
    RouteQuery,
    RouteRequest,
    RoutingPolicy,
    eligible_workers,
    rank_workers,
)
from mesh.v1 import registry_pb2
from mesh.validation import validate_request

log = logging.getLogger(__name__)

Operation = str  # "encode" | "score" | "extract": the Task oneof field names
ROUTE_MEMO_ENTRIES = 4096
OPERATIONS: tuple[Operation, ...] = ("encode", "score", "extract")

# Failures that say "not on this worker, not now" rather than "never": the same
# request may succeed on another worker.
RETRY_ELSEWHERE = frozenset(
    {
        ErrorCode.WORKER_FAILED,
        ErrorCode.QUEUE_FULL,
        ErrorCode.MODEL_LOADING,
        ErrorCode.RESOURCE_EXHAUSTED,
        ErrorCode.LORA_LOADING,
        ErrorCode.NOT_READY,
        ErrorCode.MODEL_NOT_FOUND,
    }
)

# When every attempt failed, the error the caller sees: the one that best tells
# it what to do next (a model still loading beats a full queue beats a crash).
_SURFACE_ORDER = (
    ErrorCode.MODEL_LOADING,
    ErrorCode.LORA_LOADING,
    ErrorCode.QUEUE_FULL,
    ErrorCode.RESOURCE_EXHAUSTED,
    ErrorCode.NOT_READY,
    ErrorCode.MODEL_NOT_FOUND,
    ErrorCode.WORKER_FAILED,
)


@dataclass(slots=True)
class RoutePlan:
    """What the dispatcher knows of one way of naming a model: memoised per catalog."""

    resolution: Resolution
    route: RouteRequest
    query: RouteQuery
    fleet_version: int = -1
    """`WorkerRegistry.fleet_version` that `eligible` was computed at; -1: never."""
    eligible: tuple[str, ...] | RouteDecision = ()
    """Ids of the workers routing's filters keep, or the rejection when none."""


def check_operation(catalog: Catalog, model_id: str, operation: Operation) -> None:
    """UNSUPPORTED_OPERATION when the model's config lists tasks and `operation` is not one.

    Only the tasks the mesh knows count: a config that names none of them (or
    no tasks at all) allows every operation, as before it said anything.
    """
    model = catalog.model(model_id)
    tasks = getattr(model, "tasks", None)
    if not tasks or isinstance(tasks, str):
        return
    declared = {task for task in tasks if isinstance(task, str)} & set(OPERATIONS)
    if "encode" in declared:
        declared.add("score")  # a bi-encoder scores by the cosine similarity of its embeddings
    if declared and operation not in declared:
        raise MeshError(
            ErrorCode.UNSUPPORTED_OPERATION,
            f"model '{model_id}' does not support {operation} (it supports: {', '.join(sorted(declared))})",
        )


@dataclass(frozen=True)
class DispatchPolicy:
    max_attempts: int = 3
    """Workers tried for one request at most (the primary included)."""
    default_timeout_s: float = 30.0
    """Budget of a request whose caller set no deadline."""
    max_timeout_s: float = 600.0
    """Longest budget accepted, whatever the caller asks."""
    retry_budget_ratio: float = 0.2
    """Retries may add at most this fraction of the requests of the last window."""
    retry_budget_min_per_s: float = 10.0
    """Retries always allowed per second, so a quiet router can still retry."""
    retry_budget_window_s: float = 10.0
    """Window over which the retry budget counts requests and retries."""
    provisioning_retry_after_s: float = 5.0
    """Retry-After of a PROVISIONING answer. sie-sdk sleeps exactly this long between tries (0.6.4
    gives up when it exceeds the time left), and a joining worker is routable within a second."""
    provisioning_estimated_wait_s: float = 180.0
    """Estimated wait advertised with a PROVISIONING answer."""


class RetryBudget:
    """Caps retries at a fraction of recent requests plus a small floor rate.

    Requests and retries are counted per whole second of the window: one
    increment per request on the hot path, and a window of at most
    `retry_budget_window_s + 1` counters however busy the router is.
    """

    def __init__(self, policy: DispatchPolicy, clock: Clock) -> None:
        self._policy = policy
        self._clock = clock
        self._seconds: collections.deque[list[int]] = collections.deque()
        """[second, requests, retries] per second that saw any, oldest first."""
        self._requests = 0
        self._retries = 0
        """Totals over `_seconds`."""

    def _current(self) -> list[int]:
        second = int(self._clock.monotonic())
        seconds = self._seconds
        if seconds and seconds[-1][0] == second:
            return seconds[-1]
        cutoff = second - self._policy.retry_budget_window_s
        while seconds and seconds[0][0] <= cutoff:
            _, requests, retries = seconds.popleft()
            self._requests -= requests
            self._retries -= retries
        counts = [second, 0, 0]
        seconds.append(counts)
        return counts

    def record_request(self) -> None:
        self._current()[1] += 1
        self._requests += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        counts = self._current()
        policy = self._policy
        allowed = (
            policy.retry_budget_min_per_s * policy.retry_budget_window_s
            + policy.retry_budget_ratio * self._requests
        )
        if self._retries >= allowed:
            return False
        counts[2] += 1
        self._retries += 1
        return True


class _DeadlinePassed(Exception):
    """Set on a task's future when its deadline passes before the worker answers."""


class DeadlineSlots:
    """Fails the futures of tasks whose deadline passed.

    One loop timer per `resolution_s` slot holds every deadline that falls in
    it, rather than a timer per task: a timer handle, its heap entry and its
    cancellation cost more than the rest of a task's bookkeeping together. A
    deadline is noticed at most `resolution_s` after it passes, never before.
    """

    def __init__(self, resolution_s: float = 0.005) -> None:
        self._resolution_s = resolution_s
        self._slots: dict[int, set[asyncio.Future]] = {}

    def arm(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future, when: float
    ) -> set[asyncio.Future]:
        """Fail `future` with _DeadlinePassed once `loop.time()` passes `when`; returns the
        slot, from which the caller discards the future when it is answered."""
        slot = math.ceil(when / self._resolution_s)
        members = self._slots.get(slot)
        if members is None:
            members = self._slots[slot] = set()
            loop.call_at(slot * self._resolution_s, self._expire, slot)
        members.add(future)
        return members

    def _expire(self, slot: int) -> None:
        for future in self._slots.pop(slot, ()):
            if not future.done():
                future.set_exception(_DeadlinePassed())

    def __len__(self) -> int:
        """Futures still waiting on a deadline."""
        return sum(len(members) for members in self._slots.values())


@dataclass
class DemandEntry:
    requests: int = 0
    last_seen_wall_s: float = 0.0


class PendingDemand:
    """Requests that found no capacity, per (machine profile, bundle, pool), for autoscalers."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._entries: dict[tuple[str, str, str], DemandEntry] = {}

    def record(self, machine_profile: str, bundle: str, pool: str) -> None:
        entry = self._entries.setdefault((machine_profile, bundle, pool), DemandEntry())
        entry.requests += 1
        entry.last_seen_wall_s = self._clock.wall()

    def items(self) -> list[tuple[tuple[str, str, str], DemandEntry]]:
        return sorted(self._entries.items())


class Dispatcher:
    """Runs one inference request to completion on some worker."""

    def __init__(
        self,
        registry: WorkerRegistry,
        catalog: Callable[[], Catalog],
        *,
        router_id: str,
        routing_policy: RoutingPolicy,
        policy: DispatchPolicy,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._registry = registry
        self._catalog = catalog
        self._router_id = router_id
        self._routing_policy = routing_policy
        self.policy = policy
        self._clock = clock
        self._rng = rng
        self._budget = RetryBudget(policy, clock)
        self._deadlines = DeadlineSlots()
        self.demand = PendingDemand(clock)
        self._task_ids = itertools.count(1)
        self._routes: dict[tuple[str, str, str, str, str], RoutePlan] = {}
        self._routes_catalog: Catalog | None = None
        self.completed = 0

    def _route(self, operation: Operation, request) -> RoutePlan:
        """Resolve the request's model and target; memoised per catalog, since
        every request of a busy mesh names one of a few models the same way."""
        catalog = self._catalog()
        if catalog is not self._routes_catalog:
            self._routes.clear()
            self._routes_catalog = catalog
        target = request.target
        key = (operation, request.model, request.options.profile, target.machine_profile, target.pool)
        known = self._routes.get(key)
        if known is not None:
            return known
        resolution = catalog.resolve(request.model, request.options.profile)
        check_operation(catalog, resolution.model_id, operation)
        route = RouteRequest(
            model_id=resolution.model_id.lower(),
            bundles=resolution.bundles,
            machine_profile=target.machine_profile.strip().lower(),
            pool=target.pool.strip().lower(),
        )
        if len(self._routes) >= ROUTE_MEMO_ENTRIES:
            self._routes.clear()  # keys come from clients: never let them grow the memo without bound
        plan = self._routes[key] = RoutePlan(resolution, route, RouteQuery.of(route))
        return plan

    def _decide(self, plan: RoutePlan) -> RouteDecision:
        """Routing's decision for `plan` over the live registry.

        The filters' answer is kept until the fleet changes (a worker joins,
        leaves, reports, drains: each bumps `fleet_version`); each request
        ranks fresh views of those workers, whose queue depths move with
        every task.
        """
        registry = self._registry
        if plan.fleet_version != registry.fleet_version:
            plan.fleet_version = registry.fleet_version
            found = eligible_workers(registry.snapshot(), plan.query)
            plan.eligible = found if isinstance(found, RouteDecision) else tuple(v.worker_id for v in found)
        if isinstance(plan.eligible, RouteDecision):
            return plan.eligible
        # Every kept id is a live session: leaving or closing bumps the version.
        views = [registry.get(worker_id).view() for worker_id in plan.eligible]  # type: ignore[union-attr]
        return rank_workers(views, plan.query, self._routing_policy, self._rng)

    def budget_s(self, timeout_s: float | None) -> float:
        """The time a request gets: the caller's deadline, bounded."""
        if timeout_s is None or timeout_s <= 0:
            return self.policy.default_timeout_s
        return min(timeout_s, self.policy.max_timeout_s)

    async def dispatch(self, operation: Operation, request, *, timeout_s: float | None, request_id: str):
        """Run `request` and return the worker's response message (with timing and worker set)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.budget_s(timeout_s)
        validate_request(operation, request)
        plan = self._route(operation, request)
        resolution = plan.resolution
        decision = self._decide(plan)
        if decision.primary is None:
            raise self._no_capacity(decision.rejection)
        self._budget.record_request()
        candidates = (decision.primary, *decision.fallbacks)
        failures: list[MeshError] = []
        for attempt, worker in enumerate(candidates):
            if attempt >= self.policy.max_attempts:
                break
            if attempt and not self._budget.try_spend():
                log.info("retry budget spent; %s not retried", request_id)
                break
            remaining = deadline - loop.time()
            if remaining <= 0.001:
                raise MeshError(ErrorCode.DEADLINE_EXCEEDED, "deadline passed before a worker answered")
            session = self._registry.get(worker.worker_id)
            if session is None or session.closed or session.instance_uid != worker.instance_uid:
                continue  # left between the snapshot and now
            try:
                result = await self._attempt(
                    session, operation, request, resolution.model_id, resolution.profile, remaining
                )
            except MeshError as error:
                if error.code not in RETRY_ELSEWHERE:
                    raise
                failures.append(error)
                continue
            if result.WhichOneof("outcome") == "error":
                error = MeshError.from_detail(result.error)
                if error.code not in RETRY_ELSEWHERE:
                    raise error
                failures.append(error)
                continue
            response = getattr(result, operation)
            response.worker_id = session.worker_id
            response.request_id = request_id
            timing = response.timing
            timing.queue_ms = result.queue_ms
            timing.inference_ms = result.inference_ms
            timing.total_ms = (loop.time() - started) * 1000.0
            self.completed += 1
            return response
        if not failures:
            raise MeshError(ErrorCode.WORKER_FAILED, "every chosen worker left before the request was sent")
        raise min(failures, key=lambda e: _SURFACE_ORDER.index(e.code))

    async def _attempt(
        self,
        session: WorkerSession,
        operation: Operation,
        request,
        model_id: str,
        profile: str,
        remaining_s: float,
    ) -> registry_pb2.TaskResult:
        task_id = f"{self._router_id}-{next(self._task_ids)}"
        # The session's writer builds the Task in place in the message it goes
        # out in: the request payload is copied once.
        task = OutboundTask(task_id, model_id, profile, int(remaining_s * 1000), operation, request)
        future = session.open_task(task_id)
        # A deadline slot that fails the future, not asyncio.timeout(): no
        # timer and no task cancellation machinery per request.
        loop = asyncio.get_running_loop()
        deadline = self._deadlines.arm(loop, future, loop.time() + remaining_s)
        try:
            session.send(task)
            return await future
        except _DeadlinePassed:
            self._cancel(session, task_id)
            raise MeshError(ErrorCode.DEADLINE_EXCEEDED, "no answer within the request's deadline") from None
        except asyncio.CancelledError:
            self._cancel(session, task_id)  # the caller left: free the worker
            raise
        finally:
            deadline.discard(future)
            session.finish_task(task_id)

    @staticmethod
    def _cancel(session: WorkerSession, task_id: str) -> None:
        if not session.closed:
            session.send(registry_pb2.RouterMessage(cancel=registry_pb2.Cancel(task_id=task_id)))

    def _no_capacity(self, rejection: Rejection) -> MeshError:
        """The caller's error when no worker qualified; missing capacity is recorded as demand."""
        error = rejection.to_error()
        if error.code is ErrorCode.PROVISIONING:
            self.demand.record(rejection.machine_profile, rejection.bundle, rejection.pool)
            what = (
                f"GPU type '{rejection.machine_profile}'"
                if rejection.machine_profile
                else f"bundle '{rejection.bundle}'"
            )
            error.message = f"No worker available for {what}. Provisioning in progress."
            error.retry_after_s = self.policy.provisioning_retry_after_s
            error.estimated_wait_s = self.policy.provisioning_estimated_wait_s
        return error
