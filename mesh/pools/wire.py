"""Pools between dataclasses and `mesh.v1` protobuf: the only place the two meet."""

from __future__ import annotations

import math

from google.protobuf import timestamp_pb2

from mesh.pools.assignment import PoolState
from mesh.pools.records import AssignedWorker, Pool
from mesh.pools.spec import PERMISSIVE_LIMITS, PoolSpec, parse_pool_spec
from mesh.v1 import pools_pb2

_STATE_TO_PROTO = {
    PoolState.PENDING: pools_pb2.POOL_STATE_PENDING,
    PoolState.ACTIVE: pools_pb2.POOL_STATE_ACTIVE,
    PoolState.EXPIRED: pools_pb2.POOL_STATE_EXPIRED,
}
_STATE_FROM_PROTO = {value: state for state, value in _STATE_TO_PROTO.items()}


def spec_to_proto(spec: PoolSpec) -> pools_pb2.PoolSpec:
    return pools_pb2.PoolSpec(
        name=spec.name,
        bundle=spec.bundle,
        gpus=dict(spec.gpus),
        gpu_caps=dict(spec.gpu_caps),
        # uint32 on the wire; 0 means "the default". A fractional TTL rounds up, never shorter.
        ttl_seconds=0 if spec.ttl_s is None else math.ceil(spec.ttl_s),
        minimum_worker_count=spec.minimum_worker_count,
    )


def spec_from_proto(message: pools_pb2.PoolSpec) -> PoolSpec:
    """Shape checks only (INVALID_INPUT); the pool service applies its limits."""
    return parse_pool_spec(
        name=message.name,
        gpus=dict(message.gpus),
        gpu_caps=dict(message.gpu_caps),
        ttl_seconds=message.ttl_seconds or None,
        minimum_worker_count=message.minimum_worker_count,
        bundle=message.bundle or None,
        limits=PERMISSIVE_LIMITS,
    )


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def _seconds(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def pool_to_proto(pool: Pool) -> pools_pb2.Pool:
    return pools_pb2.Pool(
        spec=spec_to_proto(pool.spec),
        state=_STATE_TO_PROTO[pool.state],
        assigned_workers=[
            pools_pb2.AssignedWorker(name=w.name, url=w.url, gpu=w.gpu, bundle=w.bundle)
            for w in pool.assigned_workers
        ],
        created_at=_timestamp(pool.created_at_s),
        last_renewed=_timestamp(pool.last_renewed_s),
    )


def pool_from_proto(message: pools_pb2.Pool) -> Pool:
    spec = parse_pool_spec(
        name=message.spec.name,
        gpus=dict(message.spec.gpus),
        gpu_caps=dict(message.spec.gpu_caps),
        ttl_seconds=message.spec.ttl_seconds or None,
        minimum_worker_count=message.spec.minimum_worker_count,
        bundle=message.spec.bundle or None,
        limits=PERMISSIVE_LIMITS,
    )
    return Pool(
        spec=spec,
        state=_STATE_FROM_PROTO.get(message.state, PoolState.PENDING),
        assigned_workers=tuple(
            AssignedWorker(name=w.name, url=w.url, gpu=w.gpu, bundle=w.bundle)
            for w in message.assigned_workers
        ),
        created_at_s=_seconds(message.created_at),
        last_renewed_s=_seconds(message.last_renewed),
    )
