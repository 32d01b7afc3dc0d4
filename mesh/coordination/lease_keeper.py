"""Keeps one lease alive, and says -- from the local clock -- when it is lost.

The store expires a lease `ttl_s` after the last keepalive it received. A
keepalive sent at local time `t` reaches the store after `t`, so the store's
expiry is never before `t + ttl_s`: if no keepalive has succeeded by then,
the lease may be gone, whether or not the store can be asked. The keeper
declares it lost at that moment (minus `loss_margin_s`), without any network
round trip, so an owner cut off from etcd stops acting as owner no later than
etcd stops believing it is one.

Keepalives go out every third of the TTL; a failed one is retried every
`retry_interval_s` until the local deadline. Loss is signalled through
`wait_lost()`, `is_lost` / `is_held`, and the optional `on_lost` callback.

Keys written through `keeper.put()` are remembered; `recover()` takes a new
lease after a loss and moves each of them to it -- only where the key is
still attached to the lost lease or absent, so a key someone else has taken
meanwhile is left alone and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from mesh.coordination.clock import SleepClock, SystemSleepClock
from mesh.coordination.store import CoordinationStore
from mesh.coordination.types import Condition, Delete, LeaseGrant, LeaseLostError, Put
from mesh.errors import ErrorCode, MeshError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseKeeperConfig:
    """How a lease is kept."""

    ttl_s: float = 10.0
    """TTL requested from the store (etcd rounds up to whole seconds and its minimum)."""
    retry_interval_s: float = 0.5
    """Wait before retrying a keepalive that failed."""
    loss_margin_s: float = 0.0
    """Declare the lease lost this long before the local deadline, to cover scheduling delays."""

    def __post_init__(self) -> None:
        if self.ttl_s <= 0 or self.retry_interval_s <= 0 or self.loss_margin_s < 0:
            raise ValueError("LeaseKeeperConfig needs ttl_s > 0, retry_interval_s > 0, loss_margin_s >= 0")


@dataclass(frozen=True)
class Recovery:
    """What `LeaseKeeper.recover()` did."""

    lease: LeaseGrant
    """The new lease, now kept alive."""
    restored: tuple[str, ...]
    """Owned keys moved to the new lease."""
    taken: tuple[str, ...]
    """Owned keys someone else holds now; no longer owned."""


class LeaseKeeper:
    """Owns one lease at a time and the keys written under it.

    `start()` grants the first lease; `close()` stops the keepalive task and by
    default revokes the lease (deleting its keys at once rather than at
    expiry).
    """

    def __init__(
        self,
        store: CoordinationStore,
        config: LeaseKeeperConfig | None = None,
        *,
        clock: SleepClock | None = None,
        on_lost: Callable[[LeaseGrant], None] | None = None,
    ) -> None:
        self._store = store
        self._config = config or LeaseKeeperConfig()
        self._clock = clock or SystemSleepClock()
        self._on_lost = on_lost
        self._grant: LeaseGrant | None = None
        self._deadline_s = 0.0
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._owned: dict[str, bytes] = {}
        self._closed = False

    # --- state -----------------------------------------------------------

    @property
    def lease_id(self) -> int:
        """Current lease id; raises LeaseLostError before `start()` succeeded."""
        if self._grant is None:
            raise LeaseLostError("no lease granted yet")
        return self._grant.lease_id

    @property
    def grant(self) -> LeaseGrant | None:
        return self._grant

    @property
    def is_lost(self) -> bool:
        return self._lost.is_set()

    @property
    def is_held(self) -> bool:
        """True while the lease is surely alive: granted, not lost, local deadline not passed."""
        return (
            self._grant is not None
            and not self._lost.is_set()
            and self._clock.monotonic() < self._deadline_s - self._config.loss_margin_s
        )

    @property
    def expires_at_s(self) -> float:
        """Local-clock time by which the lease is surely alive (last successful keepalive send + TTL)."""
        return self._deadline_s

    @property
    def owned_keys(self) -> tuple[str, ...]:
        return tuple(self._owned)

    async def wait_lost(self) -> None:
        """Return once the current lease is lost."""
        await self._lost.wait()

    def check_held(self) -> None:
        """Raise LeaseLostError unless `is_held`; call before acting as owner."""
        if not self.is_held:
            self._declare_lost("local deadline passed")
            raise LeaseLostError(f"lease {self._grant.lease_id if self._grant else 0:x} is lost")

    # --- lifecycle -------------------------------------------------------

    async def start(self) -> LeaseGrant:
        """Grant the first lease and keep it alive. Raises MeshError when the store is unreachable."""
        if self._grant is not None:
            return self._grant
        sent_s = self._clock.monotonic()
        grant = await self._store.grant_lease(self._config.ttl_s)
        self._install(grant, sent_s)
        return grant

    async def close(self, *, revoke: bool = True) -> None:
        """Stop keeping the lease; revoke it unless `revoke=False` (then its keys expire after the TTL)."""
        if self._closed:
            return
        self._closed = True
        await self._stop_task()
        if revoke and self._grant is not None:
            # Even a lease lost by the local clock may still live in the store
            # (etcd renews every lease when it restarts): end it now.
            await self._revoke_quietly(self._grant.lease_id)
        self._lost.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- owned keys ------------------------------------------------------

    async def put(self, key: str, value: bytes) -> int:
        """Write `key` under the lease and own it (it follows the lease through `recover()`).

        The key is owned from the call on, even if the write fails with
        STORE_UNAVAILABLE: retry it, or let `recover()` write it.
        """
        self.check_held()
        self._owned[key] = value
        try:
            return await self._store.put(key, value, lease_id=self.lease_id)
        except LeaseLostError:
            self._declare_lost("store no longer knows the lease")
            raise

    async def release(self, key: str, *, delete: bool = True) -> None:
        """Stop owning `key`, deleting it unless `delete=False`."""
        self._owned.pop(key, None)
        if delete:
            await self._store.txn([Condition.held_by(key, self.lease_id)], [Delete(key)])

    # --- recovery --------------------------------------------------------

    async def recover(self) -> Recovery:
        """After a loss: take a new lease and move the owned keys to it.

        Raises MeshError(STORE_UNAVAILABLE) while the store is unreachable;
        call again later. A no-op (returns the current lease) while held.
        """
        if self._closed:
            raise MeshError(ErrorCode.STORE_UNAVAILABLE, "lease keeper is closed")
        if self.is_held:
            assert self._grant is not None
            return Recovery(self._grant, (), ())
        self._declare_lost("local deadline passed")  # no-op when already declared
        await self._stop_task()
        old_id = self._grant.lease_id if self._grant else 0
        sent_s = self._clock.monotonic()
        grant = await self._store.grant_lease(self._config.ttl_s)
        self._install(grant, sent_s)
        restored: list[str] = []
        taken: list[str] = []
        try:
            for key, value in list(self._owned.items()):
                if await self._reclaim(key, value, old_id, grant.lease_id):
                    restored.append(key)
                else:
                    taken.append(key)
                    self._owned.pop(key, None)
        except BaseException:
            await self._stop_task()
            self._declare_lost("recovery failed")
            await self._revoke_quietly(grant.lease_id)
            raise
        if old_id:
            await self._revoke_quietly(old_id)
        return Recovery(grant, tuple(restored), tuple(taken))

    async def _reclaim(self, key: str, value: bytes, old_id: int, new_id: int) -> bool:
        put = [Put(key, value, new_id)]
        for condition in (
            Condition.held_by(key, old_id),
            Condition.absent(key),
            Condition.held_by(key, new_id),
        ):
            if (await self._store.txn([condition], put)).succeeded:
                return True
        return False

    # --- keepalive -------------------------------------------------------

    def _install(self, grant: LeaseGrant, sent_s: float) -> None:
        self._grant = grant
        self._deadline_s = sent_s + grant.ttl_s
        self._lost = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._keep(grant), name=f"lease-keeper:{grant.lease_id:x}"
        )

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep(self, grant: LeaseGrant) -> None:
        interval_s = grant.ttl_s / 3
        next_at_s = self._clock.monotonic() + interval_s
        while True:
            now_s = self._clock.monotonic()
            lost_at_s = self._deadline_s - self._config.loss_margin_s
            if now_s >= lost_at_s:
                self._declare_lost(f"no keepalive succeeded within {grant.ttl_s:.1f}s")
                return
            if now_s < next_at_s:
                await self._clock.sleep(min(next_at_s, lost_at_s) - now_s)
                continue
            budget_s = min(interval_s, lost_at_s - now_s)
            try:
                async with asyncio.timeout(budget_s + 0.5):
                    ttl_s = await self._store.keepalive_lease(grant.lease_id, timeout_s=budget_s)
            except (MeshError, TimeoutError) as error:
                log.info("keepalive of lease %x failed (%s); retrying", grant.lease_id, error)
                next_at_s = now_s + self._config.retry_interval_s
                continue
            if ttl_s <= 0:
                self._declare_lost("the store expired it")
                return
            # The store restarted the TTL no earlier than when the keepalive was sent.
            self._deadline_s = max(self._deadline_s, now_s + ttl_s)
            next_at_s = now_s + interval_s

    def _declare_lost(self, why: str) -> None:
        if self._lost.is_set() or self._grant is None:
            return
        log.warning("lease %x lost: %s", self._grant.lease_id, why)
        self._lost.set()
        if self._on_lost is not None:
            try:
                self._on_lost(self._grant)
            except Exception:  # the owner's callback must not stop the keeper
                log.exception("on_lost callback failed")

    async def _revoke_quietly(self, lease_id: int) -> None:
        try:
            await self._store.revoke_lease(lease_id)
        except MeshError as error:
            log.info("could not revoke lease %x (%s); it will expire", lease_id, error)
