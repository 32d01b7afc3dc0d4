"""Which worker incarnations no replica may accept: the fence book.

A router fences an incarnation (worker_id, instance_uid) when it went silent
past the silence timeout: it may be a paused process (SIGSTOP, a VM freeze)
that will resume believing it still holds its tasks. The agent answers a
Fence by taking a new instance uid and saying Hello again, so refusing the
old pair forever (well, for `fence_ttl_s`) costs a live worker nothing and
keeps a stale one out.

The book holds what this replica fenced itself (at once, before the store
hears of it) and what every replica fenced (from the `fenced/` watch). It is
pure bookkeeping over an injected clock; `Membership` feeds it and publishes.
"""

from __future__ import annotations

from mesh.clock import Clock


class FenceBook:
    """Fenced (worker_id, instance_uid) pairs, each until its expiry on the local clock."""

    def __init__(self, clock: Clock, ttl_s: float) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._expiry_s: dict[tuple[str, str], float] = {}

    def add(self, worker_id: str, instance_uid: str) -> bool:
        """Fence the pair for the TTL from now; returns whether it was not fenced already."""
        key = (worker_id, instance_uid)
        new = not self.is_fenced(worker_id, instance_uid)
        self._expiry_s[key] = max(self._expiry_s.get(key, 0.0), self._clock.monotonic() + self._ttl_s)
        return new

    def is_fenced(self, worker_id: str, instance_uid: str) -> bool:
        expiry_s = self._expiry_s.get((worker_id, instance_uid))
        if expiry_s is None:
            return False
        if expiry_s <= self._clock.monotonic():
            del self._expiry_s[(worker_id, instance_uid)]
            return False
        return True

    def prune(self) -> None:
        """Forget expired pairs (lookups do it too; this bounds memory when nobody looks)."""
        now_s = self._clock.monotonic()
        for key in [key for key, expiry_s in self._expiry_s.items() if expiry_s <= now_s]:
            del self._expiry_s[key]

    def __len__(self) -> int:
        return len(self._expiry_s)
