"""Tenant pools: workers reserved for one tenant, held by a TTL lease the client renews.

Pure decisions: `parse_pool_spec` / `pool_spec_from_json` (validation) and
`assign_pools` (which workers each pool holds). State: `pools/{name}` in the
coordination store, one lease per pool (`PoolStore`). The in-process API is
`PoolService` (a `PoolsApi`); `GrpcPoolsClient` is the same API over
`mesh.v1.Pools`, served by `PoolsServicer`. `RouterPools` wires it all into a
router: every replica mirrors assignments into routing (`PoolRoutingSync`),
the leader decides them (`PoolAssigner`).
"""

from mesh.pools.api import PoolCreated, PoolsApi
from mesh.pools.assigner import AssignerConfig, PassReport, PoolAssigner
from mesh.pools.assignment import (
    AssignmentPlan,
    FleetWorker,
    PoolAssignment,
    PoolClaim,
    PoolState,
    assign_pools,
    eligible,
)
from mesh.pools.fleet import FleetSource, LocalFleet, MergedFleet, StoreFleet
from mesh.pools.grpc_client import GrpcPoolsClient
from mesh.pools.grpc_service import PoolsServicer, add_pools_servicer
from mesh.pools.pool_store import PoolStore, PoolStoreConfig
from mesh.pools.records import POOLS_PREFIX, AssignedWorker, Pool, StoredPool, pool_key
from mesh.pools.routing_sync import PoolRoutingSync
from mesh.pools.runtime import Leadership, PoolsConfig, RouterPools
from mesh.pools.service import PoolService
from mesh.pools.spec import (
    DEFAULT_POOL,
    PERMISSIVE_LIMITS,
    PoolLimits,
    PoolSpec,
    apply_limits,
    parse_pool_name,
    parse_pool_spec,
    pool_spec_from_json,
)

__all__ = [
    "DEFAULT_POOL",
    "PERMISSIVE_LIMITS",
    "POOLS_PREFIX",
    "AssignedWorker",
    "AssignerConfig",
    "AssignmentPlan",
    "FleetSource",
    "FleetWorker",
    "GrpcPoolsClient",
    "Leadership",
    "LocalFleet",
    "MergedFleet",
    "PassReport",
    "Pool",
    "PoolAssigner",
    "PoolAssignment",
    "PoolClaim",
    "PoolCreated",
    "PoolLimits",
    "PoolRoutingSync",
    "PoolService",
    "PoolSpec",
    "PoolState",
    "PoolStore",
    "PoolStoreConfig",
    "PoolsApi",
    "PoolsConfig",
    "PoolsServicer",
    "RouterPools",
    "StoreFleet",
    "StoredPool",
    "add_pools_servicer",
    "apply_limits",
    "assign_pools",
    "eligible",
    "parse_pool_name",
    "parse_pool_spec",
    "pool_key",
    "pool_spec_from_json",
]
