"""The pure assignment decision: table tests of each rule, then properties over generated fleets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.pools import FleetWorker, PoolClaim, PoolSpec, PoolState, assign_pools, eligible

pytestmark = pytest.mark.timeout(60)


def w(worker_id, profile="l4", *, bundle="default", static="", healthy=True) -> FleetWorker:
    return FleetWorker(worker_id, profile, bundle, static, healthy)


def pool(name, gpus=None, *, caps=None, minimum=0, bundle="", assigned=(), created=0.0) -> PoolClaim:
    spec = PoolSpec(
        name, gpus=gpus or {}, gpu_caps=caps or {}, ttl_s=60.0, minimum_worker_count=minimum, bundle=bundle
    )
    return PoolClaim(spec, tuple(assigned), created)


def decide(pools, workers):
    plan = assign_pools(pools, workers)
    return {name: (a.workers, a.state) for name, a in plan.pools.items()}


PENDING, ACTIVE = PoolState.PENDING, PoolState.ACTIVE


@pytest.mark.parametrize(
    ("pools", "workers", "expected"),
    [
        pytest.param(
            [pool("a", {"l4": 2})],
            [w("w1"), w("w2"), w("w3")],
            {"a": (("w1", "w2"), ACTIVE)},
            id="exact-count",
        ),
        pytest.param([pool("a", {"l4": 2})], [w("w1")], {"a": (("w1",), PENDING)}, id="short-is-pending"),
        pytest.param(
            [pool("a", {"l4": 1})], [w("w1", "a100")], {"a": ((), PENDING)}, id="profile-must-match"
        ),
        pytest.param(
            [pool("a", {"l4": 1, "a100": 1})],
            [w("w1", "a100"), w("w2"), w("w3")],
            {"a": (("w1", "w2"), ACTIVE)},
            id="every-profile",
        ),
        pytest.param(
            [pool("a", {"l4": 1})],
            [w("w1", healthy=False), w("w2")],
            {"a": (("w2",), ACTIVE)},
            id="healthy-only",
        ),
        pytest.param(
            [pool("a", {"l4": 1}, bundle="sparse")],
            [w("w1"), w("w2", bundle="sparse")],
            {"a": (("w2",), ACTIVE)},
            id="bundle-filter",
        ),
        pytest.param(
            [pool("a", {"l4": 1})],
            [w("w1", static="b"), w("w2")],
            {"a": (("w2",), ACTIVE)},
            id="static-other-pool-excluded",
        ),
        pytest.param(
            [pool("a", {"l4": 1})],
            [w("w1"), w("w2", static="a")],
            {"a": (("w2",), ACTIVE)},
            id="own-static-worker-first",
        ),
        pytest.param(
            [pool("a", {"l4": 1}, created=2.0), pool("b", {"l4": 1}, created=1.0)],
            [w("w1")],
            {"a": ((), PENDING), "b": (("w1",), ACTIVE)},
            id="older-pool-fills-first",
        ),
        pytest.param(
            [pool("a", {"l4": 1}, created=2.0, assigned=["w1"]), pool("b", {"l4": 1}, created=1.0)],
            [w("w1")],
            {"a": (("w1",), ACTIVE), "b": ((), PENDING)},
            id="no-preemption",
        ),
        pytest.param(
            [pool("a", {"l4": 2}, assigned=["w3", "w4"])],
            [w("w1"), w("w2"), w("w3"), w("w4")],
            {"a": (("w3", "w4"), ACTIVE)},
            id="keeps-current",
        ),
        pytest.param(
            [pool("a", {"l4": 2}, assigned=["w3", "w9"])],
            [w("w1"), w("w2"), w("w3")],
            {"a": (("w1", "w3"), ACTIVE)},
            id="replaces-dead",
        ),
        pytest.param(
            [pool("a", {"l4": 1}, assigned=["w2", "w3"])],
            [w("w1"), w("w2"), w("w3")],
            {"a": (("w2",), ACTIVE)},
            id="shrinks-keeping-current",
        ),
        pytest.param(
            [pool("a", {"l4": 1}, minimum=3, caps={"l4": 2})],
            [w("w1"), w("w2"), w("w3"), w("w4", "a100")],
            {"a": (("w1", "w2"), PENDING)},
            id="minimum-within-caps",
        ),
        pytest.param(
            [pool("a", {"l4": 1}, minimum=3)],
            [w("w1"), w("w2"), w("w3"), w("w4", "a100")],
            {"a": (("w1", "w2", "w3"), ACTIVE)},
            id="minimum-from-allowed-profiles",
        ),
        pytest.param(
            [pool("a", minimum=2)],
            [w("w1", "a100"), w("w2")],
            {"a": (("w1", "w2"), ACTIVE)},
            id="any-profile",
        ),
        pytest.param([pool("a")], [w("w1")], {"a": ((), ACTIVE)}, id="asks-nothing"),
        pytest.param(
            [pool("a", {"l4": 1}, assigned=["w1"]), pool("b", {"l4": 1}, assigned=["w1"], created=1.0)],
            [w("w1"), w("w2")],
            {"a": (("w1",), ACTIVE), "b": (("w2",), ACTIVE)},
            id="double-claim-resolved-oldest-first",
        ),
    ],
)
def test_assignment_rules(pools, workers, expected):
    assert decide(pools, workers) == expected


def test_missing_says_what_is_short():
    plan = assign_pools([pool("a", {"l4": 3, "a100": 1}, minimum=5)], [w("w1")])
    assert plan.pools["a"].missing == {"l4": 2, "a100": 1, "*": 1}


def test_duplicate_reports_of_a_worker_count_once_healthy_wins():
    plan = assign_pools([pool("a", {"l4": 1})], [w("w1", healthy=False), w("w1")])
    assert plan.pools["a"].workers == ("w1",)


def test_pool_names_must_be_unique():
    with pytest.raises(ValueError):
        assign_pools([pool("a"), pool("a")], [])


# --- properties -------------------------------------------------------------

PROFILES = ("l4", "a100", "t4")
BUNDLES = ("default", "sparse")


@st.composite
def scenarios(draw):
    worker_count = draw(st.integers(0, 14))
    workers = [
        FleetWorker(
            f"w{i:02d}",
            draw(st.sampled_from(PROFILES)),
            draw(st.sampled_from(BUNDLES)),
            draw(st.sampled_from(["", "", "", "", "p0", "p1", "zz"])),
            draw(st.sampled_from([True, True, True, False])),
        )
        for i in range(worker_count)
    ]
    pools = []
    for index in range(draw(st.integers(0, 4))):
        gpus = draw(st.dictionaries(st.sampled_from(PROFILES), st.integers(1, 4), max_size=2))
        caps = {}
        for profile in draw(st.lists(st.sampled_from(PROFILES), max_size=2, unique=True)):
            caps[profile] = gpus.get(profile, 0) + draw(st.integers(0, 2))
        minimum = draw(st.integers(0, 6))
        profiles = set(gpus) | set(caps)
        if profiles and all(p in caps for p in profiles):
            minimum = min(minimum, sum(caps.values()))
        spec = PoolSpec(
            f"p{index}",
            gpus=gpus,
            gpu_caps=caps,
            ttl_s=60.0,
            minimum_worker_count=minimum,
            bundle=draw(st.sampled_from(["", "", "default", "sparse"])),
        )
        assigned = draw(st.lists(st.sampled_from([f"w{i:02d}" for i in range(16)]), max_size=5, unique=True))
        pools.append(PoolClaim(spec, tuple(assigned), draw(st.sampled_from([0.0, 1.0, 2.0]))))
    return pools, workers


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_invariants(scenario):
    pools, workers = scenario
    plan = assign_pools(pools, workers)
    by_id = {worker.worker_id: worker for worker in workers}
    specs = {claim.name: claim.spec for claim in pools}
    held: dict[str, str] = {}
    for name, assignment in plan.pools.items():
        spec = specs[name]
        assert list(assignment.workers) == sorted(assignment.workers)
        for worker_id in assignment.workers:
            # exclusive, and only workers the pool may hold
            assert worker_id not in held, f"{worker_id} in {held.get(worker_id)} and {name}"
            held[worker_id] = name
            assert eligible(by_id[worker_id], spec)
        counts: dict[str, int] = {}
        for worker_id in assignment.workers:
            counts[by_id[worker_id].machine_profile] = counts.get(by_id[worker_id].machine_profile, 0) + 1
        # never over a cap, never more than asked for
        for profile, count in counts.items():
            cap = spec.gpu_caps.get(profile)
            assert cap is None or count <= cap
        wanted_total = max(sum(spec.gpus.values()), spec.minimum_worker_count)
        assert len(assignment.workers) <= wanted_total
        # active iff every requirement is met
        met = (
            all(counts.get(p, 0) >= n for p, n in spec.gpus.items())
            and len(assignment.workers) >= spec.minimum_worker_count
        )
        assert (assignment.state is PoolState.ACTIVE) == met
        # no idle capacity left behind: a short profile has no free eligible worker of that profile
        free = [x for x in workers if x.worker_id not in plan.pool_of() and eligible(x, spec)]
        for profile in assignment.missing:
            if profile == "*":
                assert not [
                    x
                    for x in free
                    if spec.cap(x.machine_profile) is None
                    or counts.get(x.machine_profile, 0) < spec.cap(x.machine_profile)
                ]
            else:
                assert not [x for x in free if x.machine_profile == profile]


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_deterministic_whatever_the_input_order(scenario, rng: random.Random):
    pools, workers = scenario
    shuffled_pools, shuffled_workers = list(pools), list(workers)
    rng.shuffle(shuffled_pools)
    rng.shuffle(shuffled_workers)
    assert assign_pools(pools, workers) == assign_pools(shuffled_pools, shuffled_workers)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_stable_a_decision_decided_again_is_unchanged(scenario):
    pools, workers = scenario
    first = assign_pools(pools, workers)
    again = [PoolClaim(c.spec, first.pools[c.name].workers, c.created_at_s) for c in pools]
    assert assign_pools(again, workers) == first


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.data())
def test_stable_a_new_worker_moves_nobody(scenario, data):
    pools, workers = scenario
    first = assign_pools(pools, workers)
    settled = [PoolClaim(c.spec, first.pools[c.name].workers, c.created_at_s) for c in pools]
    newcomer = FleetWorker("w99", data.draw(st.sampled_from(PROFILES)), data.draw(st.sampled_from(BUNDLES)))
    after = assign_pools(settled, [*workers, newcomer])
    for name, assignment in first.pools.items():
        assert set(assignment.workers) <= set(after.pools[name].workers)


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.data())
def test_stable_a_dead_worker_moves_only_its_own_pool(scenario, data):
    pools, workers = scenario
    first = assign_pools(pools, workers)
    settled = [PoolClaim(c.spec, first.pools[c.name].workers, c.created_at_s) for c in pools]
    held = sorted(first.pool_of())
    if not held:
        return
    dead = data.draw(st.sampled_from(held))
    after = assign_pools(settled, [x for x in workers if x.worker_id != dead])
    for name, assignment in first.pools.items():
        survivors = set(assignment.workers) - {dead}
        assert survivors <= set(after.pools[name].workers)
