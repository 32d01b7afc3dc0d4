"""Pool spec validation: table tests over the REST body and the limits the pool service applies."""

from __future__ import annotations

import pytest

from mesh.errors import ErrorCode, MeshError
from mesh.pools import (
    PERMISSIVE_LIMITS,
    PoolLimits,
    PoolSpec,
    apply_limits,
    parse_pool_name,
    pool_spec_from_json,
)

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"name": "Eval-Bench_1"}, PoolSpec(name="eval-bench_1")),
        ({"name": "t", "gpus": {"L4": 2}}, PoolSpec(name="t", gpus={"l4": 2})),
        (
            {"name": "t", "gpus": {"l4": 2, "a100-40gb": 1}, "gpu_caps": {"L4": 3}},
            PoolSpec(name="t", gpus={"a100-40gb": 1, "l4": 2}, gpu_caps={"l4": 3}),
        ),
        ({"name": "t", "ttl_seconds": 60}, PoolSpec(name="t", ttl_s=60.0)),
        ({"name": "t", "ttl_seconds": 0}, PoolSpec(name="t")),
        ({"name": "t", "minimum_worker_count": 3}, PoolSpec(name="t", minimum_worker_count=3)),
        ({"name": "t", "bundle": "Default"}, PoolSpec(name="t", bundle="default")),
        ({"name": "t", "bundle": None, "gpus": None}, PoolSpec(name="t")),
        # sie-sdk fields this mesh accepts only in their default form
        ({"name": "t", "queue_pool": "default", "pinned_models": []}, PoolSpec(name="t")),
        # unknown keys are ignored, as the SIE gateway does
        ({"name": "t", "future_field": {"x": 1}}, PoolSpec(name="t")),
        ({"name": "x" * 128}, PoolSpec(name="x" * 128)),
    ],
)
def test_valid_bodies(body, expected):
    assert pool_spec_from_json(body) == expected


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": "a b"}, "name"),
        ({"name": 7}, "name"),
        ({"name": "t", "gpus": ["l4"]}, "gpus"),
        ({"name": "t", "gpus": {"l4": 0}}, "gpus.l4"),
        ({"name": "t", "gpus": {"l4": -1}}, "gpus.l4"),
        ({"name": "t", "gpus": {"l4": 1.5}}, "gpus.l4"),
        ({"name": "t", "gpus": {"l4": True}}, "gpus.l4"),
        ({"name": "t", "gpus": {"l4": "2"}}, "gpus.l4"),
        ({"name": "t", "gpus": {"L4": 1, "l4": 1}}, "gpus.l4"),
        ({"name": "t", "gpus": {"bad profile": 1}}, "gpus.bad profile"),
        ({"name": "t", "gpus": {"l4": 2}, "gpu_caps": {"l4": 1}}, "gpu_caps.l4"),
        ({"name": "t", "gpu_caps": {"l4": -1}}, "gpu_caps.l4"),
        ({"name": "t", "ttl_seconds": "60"}, "ttl_seconds"),
        ({"name": "t", "ttl_seconds": True}, "ttl_seconds"),
        ({"name": "t", "ttl_seconds": -5}, "ttl_seconds"),
        ({"name": "t", "minimum_worker_count": -1}, "minimum_worker_count"),
        ({"name": "t", "minimum_worker_count": 1.0}, "minimum_worker_count"),
        ({"name": "t", "gpu_caps": {"l4": 1}, "minimum_worker_count": 2}, "minimum_worker_count"),
        ({"name": "t", "bundle": "no spaces"}, "bundle"),
        ({"name": "t", "bundle": 3}, "bundle"),
        ({"name": "t", "queue_pool": "gpu-queue"}, "queue_pool"),
        ({"name": "t", "pinned_models": ["org/model"]}, "pinned_models"),
    ],
)
def test_invalid_bodies_name_the_field(body, field):
    with pytest.raises(MeshError) as caught:
        pool_spec_from_json(body)
    assert caught.value.code is ErrorCode.INVALID_INPUT
    assert caught.value.field == field
    assert caught.value.spec.http_status == 400


def test_minimum_worker_count_may_exceed_caps_when_a_profile_is_uncapped():
    spec = pool_spec_from_json(
        {"name": "t", "gpus": {"l4": 1, "a10": 1}, "gpu_caps": {"l4": 1}, "minimum_worker_count": 5}
    )
    assert spec.minimum_worker_count == 5


@pytest.mark.parametrize(
    ("ttl_seconds", "expected_ttl_s", "ok"),
    [
        (None, 1200.0, True),
        (10, 10.0, True),
        (9, None, False),
        (7 * 24 * 3600, 604800.0, True),
        (10**7, None, False),
    ],
)
def test_the_service_applies_its_ttl_bounds_and_default(ttl_seconds, expected_ttl_s, ok):
    # Edges parse with permissive limits; policy is the pool service's.
    spec = pool_spec_from_json({"name": "t", "ttl_seconds": ttl_seconds})
    if ok:
        assert apply_limits(spec, PoolLimits()).ttl_s == expected_ttl_s
    else:
        with pytest.raises(MeshError) as caught:
            apply_limits(spec, PoolLimits())
        assert caught.value.field == "ttl_seconds"


def test_the_default_ttl_is_the_services():
    spec = pool_spec_from_json({"name": "t"}, limits=PERMISSIVE_LIMITS)
    assert spec.ttl_s is None
    limits = PoolLimits(min_ttl_s=1, default_ttl_s=30, max_ttl_s=60)
    assert apply_limits(spec, limits).ttl_s == 30


def test_spec_json_is_the_references_shape():
    spec = apply_limits(pool_spec_from_json({"name": "T", "gpus": {"l4": 2}}), PoolLimits())
    assert spec.to_json() == {
        "name": "t",
        "bundle": None,
        "gpus": {"l4": 2},
        "gpu_caps": {},
        "ttl_seconds": 1200,
        "minimum_worker_count": 0,
    }


def test_pool_names_are_stored_lower_case():
    assert parse_pool_name("Tenant-ABC") == "tenant-abc"


def test_limits_must_be_consistent():
    with pytest.raises(ValueError):
        PoolLimits(min_ttl_s=100, default_ttl_s=10)
