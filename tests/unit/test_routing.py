"""Routing decision: every filter and scorer as a table, then pick_workers scenarios."""

from __future__ import annotations

import collections
import random

import pytest

from mesh.errors import ErrorCode
from mesh.routing import (
    MODEL_AFFINITY,
    QUEUE_LOAD,
    BundleFilter,
    ExcludeFilter,
    HealthyFilter,
    MachineProfileFilter,
    ModelLoad,
    ModelLoadFailedFilter,
    ModelState,
    PoolFilter,
    Rejection,
    RejectionReason,
    RouteQuery,
    RouteRequest,
    RoutingPolicy,
    Tier,
    WorkerView,
    is_saturated,
    load_fraction,
    pick_workers,
)

MODEL = "org/model"
POLICY = RoutingPolicy()


def worker(worker_id: str, state: ModelState | None = None, **fields) -> WorkerView:
    models = {MODEL: ModelLoad(state)} if state is not None else {}
    fields.setdefault("max_batch_requests", 10)  # capacity 40 with the default policy
    return WorkerView(worker_id=worker_id, models=models, **fields)


def request(**fields) -> RouteRequest:
    fields.setdefault("model_id", MODEL)
    fields.setdefault("bundles", ("default",))
    return RouteRequest(**fields)


def pick(workers, rng_seed: int = 0, policy: RoutingPolicy = POLICY, **request_fields):
    return pick_workers(workers, request(**request_fields), policy, random.Random(rng_seed))


def ids(workers) -> list[str]:
    return [w.worker_id for w in workers]


# --- filters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted_pool", "expected"),
    [
        ("a", ["in-a", "in-A"]),
        ("A", ["in-a", "in-A"]),
        ("", ["shared"]),
        ("c", []),
    ],
)
def test_pool_filter(wanted_pool: str, expected: list[str]) -> None:
    workers = [worker("in-a", pool="a"), worker("in-A", pool="A"), worker("in-b", pool="b"), worker("shared")]
    assert ids(PoolFilter()(workers, RouteQuery.of(request(pool=wanted_pool)))) == expected


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [("l4", ["l4", "L4"]), ("L4", ["l4", "L4"]), ("", ["l4", "L4", "a100", "none"]), ("h100", [])],
)
def test_machine_profile_filter(wanted: str, expected: list[str]) -> None:
    workers = [
        worker("l4", machine_profile="l4"),
        worker("L4", machine_profile="L4"),
        worker("a100", machine_profile="a100"),
        worker("none"),
    ]
    assert ids(MachineProfileFilter()(workers, RouteQuery.of(request(machine_profile=wanted)))) == expected


@pytest.mark.parametrize(
    ("bundles", "expected"),
    [(("default", "full"), ["default", "FULL"]), (("gliner",), ["gliner"]), (("Full",), ["FULL"]), ((), [])],
)
def test_bundle_filter(bundles: tuple, expected: list[str]) -> None:
    workers = [
        worker("default", bundle="default"),
        worker("FULL", bundle="FULL"),
        worker("gliner", bundle="gliner"),
    ]
    assert ids(BundleFilter()(workers, RouteQuery.of(request(bundles=bundles)))) == expected


def test_healthy_filter() -> None:
    workers = [
        worker("ok"),
        worker("not-ready", ready=False),
        worker("draining", draining=True),
        worker("fenced", fenced=True),
        worker("ejected", ejected=True),
        worker("busy-but-ok", saturated=True, queue_depth=99),
    ]
    assert ids(HealthyFilter()(workers, RouteQuery.of(request()))) == ["ok", "busy-but-ok"]


def test_model_load_failed_filter() -> None:
    workers = [
        worker("cold"),
        worker("failed", ModelState.FAILED),
        worker("loaded", ModelState.LOADED),
        worker("loading", ModelState.LOADING),
    ]
    assert ids(ModelLoadFailedFilter()(workers, RouteQuery.of(request()))) == ["cold", "loaded", "loading"]
    # Another model's failure is not this model's.
    other = WorkerView(worker_id="other", models={"org/other": ModelLoad(ModelState.FAILED)})
    assert ids(ModelLoadFailedFilter()([other], RouteQuery.of(request()))) == ["other"]


def test_exclude_filter() -> None:
    workers = [worker("a"), worker("b"), worker("c")]
    assert ids(ExcludeFilter()(workers, RouteQuery.of(request(exclude=frozenset({"b", "zz"}))))) == ["a", "c"]
    assert ExcludeFilter()(workers, RouteQuery.of(request())) is workers


# --- scorers -----------------------------------------------------------------------


def tier_of(*workers: WorkerView) -> Tier:
    tier = Tier(0)
    for w in workers:
        tier.add(w, POLICY)
    return tier


@pytest.mark.parametrize(
    ("fields", "load", "saturated"),
    [
        ({"queue_depth": 0}, 0.0, False),
        ({"queue_depth": 10, "queue_capacity": 40}, 0.25, False),
        ({"queue_depth": 10}, 0.25, False),  # unknown capacity: 4 batches of 10
        ({"queue_depth": 3, "max_batch_requests": 0}, 0.75, False),  # a zero batch size reads as 1
        ({"queue_depth": 40, "queue_capacity": 40}, 1.0, True),  # depth reached capacity
        ({"queue_depth": 50}, 1.25, False),  # unknown capacity is a guess, not a limit
        ({"queue_depth": 1, "saturated": True}, 0.025, True),  # the worker's word
    ],
)
def test_load_fraction_and_saturation(fields: dict, load: float, saturated: bool) -> None:
    w = worker("w", **fields)
    assert load_fraction(w, POLICY) == pytest.approx(load)
    assert is_saturated(w) is saturated


def test_queue_load_scorer() -> None:
    tier = tier_of(
        worker("idle"),
        worker("quarter", queue_depth=10),
        worker("full", queue_depth=40),
        worker("over", queue_depth=90),
    )
    assert QUEUE_LOAD(tier, RouteQuery.of(request()), POLICY) == pytest.approx([1.0, 0.75, 0.0, 0.0])


_ROOMY_HOLDER = worker("roomy", ModelState.LOADED, queue_depth=4)


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        # Holders have room: holders 1, loading 0.5, cold 0, failed 0; a busy holder is still a holder.
        (
            [
                _ROOMY_HOLDER,
                worker("busy", ModelState.LOADED, queue_depth=39),
                worker("loading", ModelState.LOADING),
                worker("cold"),
                worker("available", ModelState.AVAILABLE),
                worker("unloading", ModelState.UNLOADING),
                worker("failed", ModelState.FAILED),
            ],
            [1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0],
        ),
        # Every holder at/above the spill threshold (0.8 * 40 = 32): spill.
        (
            [
                worker("hot", ModelState.LOADED, queue_depth=32),
                worker("loading", ModelState.LOADING),
                worker("cold"),
                worker("failed", ModelState.FAILED),
            ],
            [0.0, 1.0, 1.0, 0.0],
        ),
        # A saturated holder has no room even when its depth looks low.
        ([worker("sat", ModelState.LOADED, saturated=True), worker("cold")], [0.0, 1.0]),
        # Nobody holds it: everyone but a failed worker is equally good.
        (
            [worker("cold"), worker("loading", ModelState.LOADING), worker("failed", ModelState.FAILED)],
            [1.0, 1.0, 0.0],
        ),
    ],
    ids=["room", "spill", "saturated-holder", "no-holder"],
)
def test_model_affinity_scorer(tier: list[WorkerView], expected: list[float]) -> None:
    assert MODEL_AFFINITY(tier_of(*tier), RouteQuery.of(request()), POLICY) == expected


def test_affinity_reads_the_model_case_insensitively() -> None:
    w = WorkerView(worker_id="w", models={MODEL: ModelLoad(ModelState.LOADED)})
    assert MODEL_AFFINITY(
        tier_of(w, worker("cold")), RouteQuery.of(request(model_id=MODEL.upper())), POLICY
    ) == [1.0, 0.0]


# --- pick_workers: affinity and load -------------------------------------------------


def test_holder_below_threshold_beats_idle_cold_worker() -> None:
    for seed in range(20):
        decision = pick([worker("cold"), worker("holder", ModelState.LOADED, queue_depth=31)], seed)
        assert decision.primary.worker_id == "holder"
        assert ids(decision.fallbacks) == ["cold"]


def test_all_holders_above_threshold_spill_to_a_cold_worker() -> None:
    workers = [
        worker("hot1", ModelState.LOADED, queue_depth=32),
        worker("hot2", ModelState.LOADED, queue_depth=36),
        worker("cold", queue_depth=20),
    ]
    decision = pick(workers)
    assert ids(decision.attempts) == ["cold", "hot1", "hot2"]


def test_among_holders_the_least_loaded_wins_then_loading_then_cold() -> None:
    workers = [
        worker("cold"),
        worker("loading", ModelState.LOADING),
        worker("holder-busy", ModelState.LOADED, queue_depth=20),
        worker("holder-light", ModelState.LOADED, queue_depth=2),
        worker("failed", ModelState.FAILED),
    ]
    decision = pick(workers, policy=RoutingPolicy(max_fallbacks=10))
    assert ids(decision.attempts) == ["holder-light", "holder-busy", "loading", "cold"]


def test_spill_is_decided_per_bundle_tier() -> None:
    # Tier 0's only holder is hot; tier 1 has a roomy holder. Tier 0 still wins
    # (bundle priority first), and within it the spill goes to the cold worker.
    workers = [
        worker("t0-hot", ModelState.LOADED, queue_depth=35, bundle="a"),
        worker("t0-cold", bundle="a"),
        worker("t1-holder", ModelState.LOADED, bundle="b"),
    ]
    assert ids(pick(workers, bundles=("a", "b")).attempts) == ["t0-cold", "t0-hot", "t1-holder"]


# --- pick_workers: bundles, pools, profiles ------------------------------------------


def test_first_bundle_with_a_candidate_wins_and_later_bundles_are_fallbacks() -> None:
    workers = [
        worker("full-holder", ModelState.LOADED, bundle="full"),
        worker("gliner-cold", bundle="gliner", queue_depth=30),
    ]
    decision = pick(workers, bundles=("gliner", "full"))
    assert decision.primary.worker_id == "gliner-cold"
    assert ids(decision.fallbacks) == ["full-holder"]


def test_an_absent_preferred_bundle_falls_to_the_next() -> None:
    decision = pick([worker("full", bundle="full")], bundles=("gliner", "full"))
    assert decision.primary.worker_id == "full"


def test_pool_isolation_both_ways() -> None:
    workers = [worker("shared"), worker("tenant", pool="tenant-abc")]
    assert ids(pick(workers).attempts) == ["shared"]
    assert ids(pick(workers, pool="tenant-abc").attempts) == ["tenant"]
    assert ids(pick(workers, pool="TENANT-ABC").attempts) == ["tenant"]
    assert pick([worker("tenant", pool="tenant-abc")]).rejection.reason is RejectionReason.NO_SHARED_WORKER
    assert pick([worker("shared")], pool="tenant-abc").rejection.reason is RejectionReason.POOL_EMPTY


def test_machine_profile_is_case_insensitive() -> None:
    workers = [worker("a100", machine_profile="a100"), worker("l4", machine_profile="L4")]
    assert ids(pick(workers, machine_profile="l4").attempts) == ["l4"]
    assert ids(pick(workers, machine_profile="A100").attempts) == ["a100"]
    assert set(ids(pick(workers).attempts)) == {"a100", "l4"}


# --- pick_workers: saturation, fallbacks, ties ----------------------------------------


def test_saturated_workers_are_last_fallbacks_never_primary() -> None:
    workers = [
        worker("sat-holder", ModelState.LOADED, saturated=True),
        worker("full-queue", ModelState.LOADED, queue_depth=8, queue_capacity=8),
        worker("cold-busy", queue_depth=30),
    ]
    decision = pick(workers)
    assert decision.primary.worker_id == "cold-busy"
    assert set(ids(decision.fallbacks)) == {"sat-holder", "full-queue"}


def test_saturated_preferred_bundle_yields_to_the_next_bundle() -> None:
    workers = [worker("gliner", bundle="gliner", saturated=True), worker("full", bundle="full")]
    assert ids(pick(workers, bundles=("gliner", "full")).attempts) == ["full", "gliner"]


def test_fallbacks_are_ordered_distinct_capped_and_exclude_the_primary() -> None:
    workers = [worker(f"w{depth}", queue_depth=depth) for depth in (5, 1, 4, 2, 3, 0)]
    decision = pick(workers, policy=RoutingPolicy(max_fallbacks=3))
    assert decision.primary.worker_id == "w0"
    assert ids(decision.fallbacks) == ["w1", "w2", "w3"]
    assert pick(workers, policy=RoutingPolicy(max_fallbacks=0)).fallbacks == ()
    assert len(pick(workers, policy=RoutingPolicy(max_fallbacks=50)).attempts) == 6


def test_duplicate_rows_are_returned_once() -> None:
    same = worker("dup")
    decision = pick([same, same, same, worker("other", queue_depth=5)])
    assert ids(decision.attempts) == ["dup", "other"]


def test_excluded_workers_are_never_returned() -> None:
    workers = [worker("a"), worker("b", queue_depth=3), worker("c", queue_depth=9)]
    assert ids(pick(workers, exclude=frozenset({"a"})).attempts) == ["b", "c"]


def test_ties_break_uniformly_with_a_seeded_rng() -> None:
    workers = [worker("a"), worker("b"), worker("c")]
    rng = random.Random(1234)
    counts = collections.Counter(
        pick_workers(workers, request(), POLICY, rng).primary.worker_id for _ in range(3000)
    )
    assert set(counts) == {"a", "b", "c"}
    assert all(850 <= n <= 1150 for n in counts.values()), counts


def test_ties_among_many_identical_workers_still_spread() -> None:
    workers = [worker(f"w{i:03}") for i in range(200)]
    rng = random.Random(7)
    primaries = collections.Counter(
        pick_workers(workers, request(), POLICY, rng).primary.worker_id for _ in range(4000)
    )
    assert len(primaries) > 150
    assert max(primaries.values()) < 60


def test_the_same_seed_gives_the_same_decision() -> None:
    workers = [worker(f"w{i}") for i in range(10)]
    assert pick(workers, 42) == pick(workers, 42)


def test_zero_weights_route_by_tier_and_draw_only() -> None:
    policy = RoutingPolicy(affinity_weight=0, load_weight=0)
    workers = [worker("busy", queue_depth=30), worker("idle")]
    seen = {pick(workers, seed, policy).primary.worker_id for seed in range(30)}
    assert seen == {"busy", "idle"}


def test_accepts_any_sequence() -> None:
    assert pick((worker("a"),)).primary.worker_id == "a"


# --- rejections -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "request_fields", "reason"),
    [
        ([], {}, RejectionReason.NO_SHARED_WORKER),
        ([worker("t", pool="t")], {}, RejectionReason.NO_SHARED_WORKER),
        ([], {"pool": "t"}, RejectionReason.POOL_EMPTY),
        (
            [worker("a100", machine_profile="a100")],
            {"machine_profile": "l4"},
            RejectionReason.NO_MACHINE_PROFILE,
        ),
        (
            [worker("t-a100", pool="t", machine_profile="a100")],
            {"pool": "t", "machine_profile": "l4"},
            RejectionReason.NO_MACHINE_PROFILE,
        ),
        ([worker("other", bundle="other")], {}, RejectionReason.NO_BUNDLE),
        ([worker("x")], {"bundles": ()}, RejectionReason.NO_BUNDLE),
        (
            [worker("d", draining=True), worker("other", bundle="other")],
            {},
            RejectionReason.NO_HEALTHY_WORKER,
        ),
        ([worker("t", pool="t", fenced=True)], {"pool": "t"}, RejectionReason.NO_HEALTHY_WORKER),
        (
            [worker("f", ModelState.FAILED), worker("d", ModelState.LOADED, draining=True)],
            {},
            RejectionReason.MODEL_LOAD_FAILED,
        ),
        ([worker("a"), worker("b")], {"exclude": frozenset({"a", "b"})}, RejectionReason.ALL_EXCLUDED),
        (
            [worker("a", saturated=True), worker("b", queue_depth=4, queue_capacity=4)],
            {},
            RejectionReason.ALL_SATURATED,
        ),
    ],
)
def test_rejection_reasons(workers, request_fields, reason) -> None:
    decision = pick(workers, **request_fields)
    assert decision.primary is None and decision.fallbacks == () and decision.attempts == ()
    assert decision.rejection.reason is reason


def test_rejection_names_the_missing_capacity() -> None:
    rejection = pick(
        [worker("x", bundle="other")], machine_profile="L4", bundles=("gliner", "full")
    ).rejection
    assert (rejection.machine_profile, rejection.bundle, rejection.pool, rejection.model_id) == (
        "l4",
        "gliner",
        "",
        MODEL,
    )
    assert "gliner" in rejection.message and "l4" in rejection.message


def test_a_decision_with_a_primary_has_no_rejection() -> None:
    assert pick([worker("a")]).rejection is None


def _rejection(reason: RejectionReason, pool: str = "") -> Rejection:
    return Rejection(reason=reason, model_id=MODEL, machine_profile="l4", bundle="default", pool=pool)


@pytest.mark.parametrize(
    ("reason", "pool", "code", "missing_capacity"),
    [
        (RejectionReason.NO_SHARED_WORKER, "", ErrorCode.PROVISIONING, True),
        (RejectionReason.NO_MACHINE_PROFILE, "", ErrorCode.PROVISIONING, True),
        (RejectionReason.NO_BUNDLE, "", ErrorCode.PROVISIONING, True),
        (RejectionReason.NO_HEALTHY_WORKER, "", ErrorCode.PROVISIONING, True),
        (RejectionReason.POOL_EMPTY, "t", ErrorCode.POOL_UNAVAILABLE, False),
        (RejectionReason.NO_MACHINE_PROFILE, "t", ErrorCode.POOL_UNAVAILABLE, False),
        (RejectionReason.NO_BUNDLE, "t", ErrorCode.POOL_UNAVAILABLE, False),
        (RejectionReason.NO_HEALTHY_WORKER, "t", ErrorCode.POOL_UNAVAILABLE, False),
        (RejectionReason.ALL_SATURATED, "", ErrorCode.QUEUE_FULL, False),
        (RejectionReason.ALL_SATURATED, "t", ErrorCode.QUEUE_FULL, False),
        (RejectionReason.ALL_EXCLUDED, "", ErrorCode.WORKER_FAILED, False),
        (RejectionReason.MODEL_LOAD_FAILED, "", ErrorCode.MODEL_LOAD_FAILED, False),
    ],
)
def test_rejection_to_error(reason, pool, code, missing_capacity) -> None:
    rejection = _rejection(reason, pool)
    error = rejection.to_error()
    assert error.code is code
    assert rejection.is_missing_capacity is missing_capacity
    assert (error.machine_profile, error.bundle) == ("l4", "default")
    assert error.retryable is (code is not ErrorCode.MODEL_LOAD_FAILED)


def test_every_rejection_reason_maps_to_an_error() -> None:
    for reason in RejectionReason:
        for pool in ("", "t"):
            assert _rejection(reason, pool).to_error().code in {
                ErrorCode.PROVISIONING,
                ErrorCode.POOL_UNAVAILABLE,
                ErrorCode.QUEUE_FULL,
                ErrorCode.WORKER_FAILED,
                ErrorCode.MODEL_LOAD_FAILED,
            }


def test_reason_values_are_metric_labels() -> None:
    assert RejectionReason.ALL_SATURATED == "all_saturated"
    assert all(reason.value == reason.value.lower() for reason in RejectionReason)


# --- policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"affinity_weight": -1},
        {"load_weight": -0.1},
        {"spill_threshold": 0},
        {"spill_threshold": 1.5},
        {"loading_affinity": 2},
        {"assumed_queue_batches": 0},
        {"max_fallbacks": -1},
    ],
)
def test_policy_rejects_nonsense(fields: dict) -> None:
    with pytest.raises(ValueError):
        RoutingPolicy(**fields)
