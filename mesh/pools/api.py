"""What a front end (REST routes, the gRPC servicer) needs from the pools of a mesh.

Two implementations: `PoolService` (in the router process, over the
coordination store) and `GrpcPoolsClient` (a facade in its own process,
over `mesh.v1.Pools` on the router replicas). Both take and return plain
dataclasses and raise `MeshError` for everything a caller should see:
INVALID_INPUT, POOL_NOT_FOUND, PERMISSION_DENIED (the `default` pool),
STORE_UNAVAILABLE (retryable, with Retry-After).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mesh.pools.records import Pool
from mesh.pools.spec import PoolSpec


@dataclass(frozen=True, slots=True)
class PoolCreated:
    """The answer to a create."""

    pool: Pool
    created: bool
    """False when the pool existed and this create renewed it (and updated its spec)."""


class PoolsApi(Protocol):
    async def create_pool(self, spec: PoolSpec) -> PoolCreated:
        """Create the pool, or renew it when it exists (idempotent). `spec.ttl_s` None: the default TTL."""
        ...

    async def get_pool(self, name: str) -> Pool:
        """Raises POOL_NOT_FOUND."""
        ...

    async def renew_pool(self, name: str) -> None:
        """Keep the pool for another TTL. Raises POOL_NOT_FOUND."""
        ...

    async def delete_pool(self, name: str) -> None:
        """Raises POOL_NOT_FOUND, or PERMISSION_DENIED for `default`."""
        ...

    async def list_pools(self) -> list[Pool]:
        """Every pool, sorted by name."""
        ...
