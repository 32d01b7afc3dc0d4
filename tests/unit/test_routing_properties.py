"""Properties of pick_workers over generated fleets and requests.

The oracle below restates the filters from their documented contract (not
from the code) and ranks candidates with the public scorer plug-ins, so these
tests check the picker's composition: who may be returned, in what order.
"""

from __future__ import annotations

import dataclasses
import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.routing import (
    ModelLoad,
    ModelState,
    RouteQuery,
    RouteRequest,
    RoutingPolicy,
    Tier,
    WorkerView,
    eligible_workers,
    pick_workers,
    rank_workers,
)
from mesh.routing.scorers import weighted_scorers

MODEL = "org/model"
TOLERANCE = 1e-9

states = st.sampled_from([None, *ModelState])
mostly_true = st.sampled_from([True, True, True, True, False])
mostly_false = st.sampled_from([False, False, False, False, True])


@st.composite
def scenarios(draw):
    """A request, then a fleet biased towards matching it: most generated
    workers pass most filters, so ranking is exercised, not just rejection."""
    bundles = tuple(draw(st.permutations(["a", "b", "c"]))[: draw(st.sampled_from([0, 1, 2, 2, 3, 3]))])
    wanted_profile = draw(st.sampled_from(["", "l4", "L4", "a100"]))
    wanted_pool = draw(st.sampled_from(["", "", "p", "q"]))

    def near(wanted: str, others: list[str]):
        return st.just(wanted) | st.just(wanted.upper()) | st.sampled_from(others)

    worker = st.builds(
        lambda state, **fields: WorkerView(
            worker_id="", models={MODEL: ModelLoad(state)} if state is not None else {}, **fields
        ),
        state=states,
        bundle=st.sampled_from([*bundles, *(b.upper() for b in bundles), "a", "b", "c", "z"]),
        machine_profile=near(wanted_profile or "l4", ["", "l4", "a100"]),
        pool=near(wanted_pool, ["", "p", "q"]),
        ready=mostly_true,
        draining=mostly_false,
        fenced=mostly_false,
        ejected=mostly_false,
        saturated=mostly_false,
        queue_depth=st.integers(0, 50),
        queue_capacity=st.sampled_from([0, 8, 40]),
        max_batch_requests=st.sampled_from([0, 1, 8]),
    )
    size = draw(st.integers(0, 40))
    rows = draw(st.lists(worker, min_size=size, max_size=size))
    workers = [dataclasses.replace(row, worker_id=f"w{i}") for i, row in enumerate(rows)]
    ids = [w.worker_id for w in workers]
    exclude = frozenset(draw(st.lists(st.sampled_from(ids), max_size=4))) if ids else frozenset()
    request = RouteRequest(
        model_id=draw(st.sampled_from([MODEL, MODEL.upper()])),
        bundles=bundles,
        machine_profile=wanted_profile,
        pool=wanted_pool,
        exclude=exclude,
    )
    policy = RoutingPolicy(
        spill_threshold=draw(st.sampled_from([0.5, 0.8, 1.0])),
        max_fallbacks=draw(st.integers(0, 5)),
        affinity_weight=draw(st.sampled_from([0.0, 2.0, 3.5])),
        load_weight=draw(st.sampled_from([0.0, 1.0])),
    )
    return workers, request, policy, draw(st.integers(0, 2**32 - 1))


def eligible(worker: WorkerView, request: RouteRequest) -> bool:
    load = worker.models.get(request.model_id.lower())
    return (
        worker.pool.lower() == request.pool.lower()
        and (not request.machine_profile or worker.machine_profile.lower() == request.machine_profile.lower())
        and worker.bundle.lower() in {b.lower() for b in request.bundles}
        and worker.ready
        and not (worker.draining or worker.fenced or worker.ejected)
        and (load is None or load.state is not ModelState.FAILED)
        and worker.worker_id not in request.exclude
    )


def ranking_keys(workers: list[WorkerView], request: RouteRequest, policy: RoutingPolicy) -> dict[str, tuple]:
    """(saturated, bundle rank, -weighted score) per eligible worker."""
    query = RouteQuery.of(request)
    tiers: dict[int, Tier] = {}
    for worker in workers:
        if eligible(worker, request):
            rank = [b.lower() for b in request.bundles].index(worker.bundle.lower())
            tiers.setdefault(rank, Tier(rank)).add(worker, policy)
    keys = {}
    for rank, tier in tiers.items():
        totals = [0.0] * len(tier.workers)
        for scorer, weight in weighted_scorers(policy):
            for i, score in enumerate(scorer(tier, query, policy)):
                totals[i] += weight * score
        for worker, total, saturated in zip(tier.workers, totals, tier.saturated):
            keys[worker.worker_id] = (saturated, rank, -total)
    return keys


def _before_or_tied(left: tuple, right: tuple) -> bool:
    if left[:2] != right[:2]:
        return left[:2] < right[:2]
    return left[2] <= right[2] + TOLERANCE


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_decision_respects_every_filter_and_ranks_optimally(scenario) -> None:
    workers, request, policy, seed = scenario
    decision = pick_workers(workers, request, policy, random.Random(seed))
    keys = ranking_keys(workers, request, policy)

    if not keys or all(saturated for saturated, _, _ in keys.values()):
        assert decision.primary is None and decision.fallbacks == ()
        assert decision.rejection is not None
        return
    assert decision.rejection is None
    attempts = decision.attempts
    attempt_ids = [w.worker_id for w in attempts]
    # Never violates a filter, never an excluded worker, never twice.
    assert all(eligible(w, request) for w in attempts)
    assert not set(attempt_ids) & request.exclude
    assert len(set(attempt_ids)) == len(attempt_ids)
    assert decision.primary.worker_id not in {w.worker_id for w in decision.fallbacks}
    assert len(attempts) == min(1 + policy.max_fallbacks, len(keys))
    # The primary is never saturated while an unsaturated candidate exists.
    assert not keys[decision.primary.worker_id][0]
    # Attempts come in ranking order and nobody left out ranks ahead of them.
    chosen = [keys[i] for i in attempt_ids]
    assert all(_before_or_tied(a, b) for a, b in itertools.pairwise(chosen))
    left_out = [key for worker_id, key in keys.items() if worker_id not in attempt_ids]
    assert all(_before_or_tied(chosen[-1], key) for key in left_out)


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_decision_is_independent_of_snapshot_order_up_to_ties(scenario, shuffler) -> None:
    workers, request, policy, seed = scenario
    shuffled = list(workers)
    shuffler.shuffle(shuffled)
    first = pick_workers(workers, request, policy, random.Random(seed))
    second = pick_workers(shuffled, request, policy, random.Random(seed + 1))
    assert (first.rejection is None) == (second.rejection is None)
    if first.rejection is not None:
        assert first.rejection == second.rejection
        return
    keys = ranking_keys(workers, request, policy)
    first_keys = [keys[w.worker_id] for w in first.attempts]
    second_keys = [keys[w.worker_id] for w in second.attempts]
    assert len(first_keys) == len(second_keys)
    for a, b in zip(first_keys, second_keys):
        assert a[:2] == b[:2] and abs(a[2] - b[2]) <= TOLERANCE


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_rejection_names_the_request(scenario) -> None:
    workers, request, policy, seed = scenario
    decision = pick_workers(workers, request, policy, random.Random(seed))
    if decision.rejection is None:
        return
    rejection = decision.rejection
    assert rejection.pool == request.pool.lower()
    assert rejection.machine_profile == request.machine_profile.lower()
    assert rejection.bundle == (request.bundles[0] if request.bundles else "")
    assert rejection.to_error().code is not None


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.lists(st.integers(0, 80), min_size=40, max_size=40))
def test_filters_read_no_load_so_their_answer_can_be_kept_while_load_moves(scenario, depths) -> None:
    # The dispatcher keeps eligible_workers' answer until the fleet changes and
    # ranks fresh views per request: valid only if queue depth never filters.
    workers, request, policy, seed = scenario
    query = RouteQuery.of(request)
    loaded = [dataclasses.replace(w, queue_depth=depth) for w, depth in zip(workers, depths)]
    before = eligible_workers(workers, query)
    after = eligible_workers(loaded, query)
    if isinstance(before, list):
        assert isinstance(after, list)
        assert [w.worker_id for w in before] == [w.worker_id for w in after]
        # Ranking the kept workers' fresh rows is what pick_workers decides on the fresh fleet.
        by_id = {w.worker_id: w for w in loaded}
        kept = rank_workers([by_id[w.worker_id] for w in before], query, policy, random.Random(seed))
        fresh = pick_workers(loaded, request, policy, random.Random(seed))
        assert kept == fresh
    else:
        assert after == before
