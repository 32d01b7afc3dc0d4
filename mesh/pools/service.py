"""`PoolService`: the pools API of one router, over the coordination store.

The in-process `PoolsApi`: the REST routes call it directly when the facade
runs inside the router, and `PoolsServicer` serves it as `mesh.v1.Pools`.
It applies the router's `PoolLimits` (the edges only check shape), protects
the `default` pool (the shared fleet is not a tenant pool) and reports each
pool as of now: a pool whose TTL passed unrenewed reads as EXPIRED even if
the store has not dropped it yet.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

from mesh.clock import Clock
from mesh.errors import ErrorCode, MeshError
from mesh.pools.api import PoolCreated
from mesh.pools.pool_store import PoolStore
from mesh.pools.records import Pool
from mesh.pools.spec import DEFAULT_POOL, PoolLimits, PoolSpec, apply_limits, parse_pool_name

log = logging.getLogger(__name__)


def _protected(name: str, action: str) -> MeshError:
    return MeshError(
        ErrorCode.PERMISSION_DENIED,
        f"cannot {action} pool {name!r}: it is the shared fleet, not a tenant pool",
    )


class PoolService:
    """`PoolsApi` backed by this router's coordination store."""

    def __init__(
        self,
        pool_store: PoolStore,
        clock: Clock,
        *,
        limits: PoolLimits | None = None,
        bundle_exists: Callable[[str], bool] | None = None,
    ) -> None:
        """`bundle_exists`: whether the catalog knows a bundle; None accepts any bundle name."""
        self._pools = pool_store
        self._clock = clock
        self.limits = limits or PoolLimits()
        self._bundle_exists = bundle_exists
        self.events: collections.Counter[str] = collections.Counter()
        """Pool events answered here ("created", "renewed", "deleted"), for metrics."""

    def _now(self, pool: Pool) -> Pool:
        return pool.as_seen_at(self._clock.wall())

    async def create_pool(self, spec: PoolSpec) -> PoolCreated:
        if spec.name == DEFAULT_POOL:
            raise _protected(spec.name, "create")
        spec = apply_limits(spec, self.limits)
        if spec.bundle and self._bundle_exists is not None and not self._bundle_exists(spec.bundle):
            raise MeshError(
                ErrorCode.INVALID_INPUT, f"bundle: unknown bundle {spec.bundle!r}", field="bundle"
            )
        outcome = await self._pools.create_or_renew(spec)
        self.events["created" if outcome.created else "renewed"] += 1
        return PoolCreated(self._now(outcome.stored.pool), outcome.created)

    async def get_pool(self, name: str) -> Pool:
        name = parse_pool_name(name)
        stored = await self._pools.get(name)
        if stored is None:
            raise MeshError(ErrorCode.POOL_NOT_FOUND, f"pool {name!r} does not exist (or expired)")
        return self._now(stored.pool)

    async def renew_pool(self, name: str) -> None:
        await self._pools.renew(parse_pool_name(name))
        self.events["renewed"] += 1

    async def delete_pool(self, name: str) -> None:
        name = parse_pool_name(name)
        if name == DEFAULT_POOL:
            raise _protected(name, "delete")
        if not await self._pools.delete(name):
            raise MeshError(ErrorCode.POOL_NOT_FOUND, f"pool {name!r} does not exist (or expired)")
        self.events["deleted"] += 1
        log.info("pool %s deleted", name)

    async def list_pools(self) -> list[Pool]:
        stored, _revision = await self._pools.list()
        return [self._now(entry.pool) for entry in stored]
