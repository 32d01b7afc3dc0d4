"""How a router takes part in the replica set."""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.coordination import BackoffPolicy


@dataclass(frozen=True)
class ReplicaConfig:
    """Lease, fencing and retry settings of one router replica."""

    lease_ttl_s: float = 5.0
    """TTL of the router's lease. Its registration, its workers' keys and its
    leadership live under it: a crashed router's keys vanish and another
    replica takes over leadership this long after the crash (etcd rounds up
    to whole seconds, minimum 2)."""
    lease_loss_margin_s: float = 0.25
    """Consider the lease lost this long before its local deadline, so a leader
    cut off from etcd stops acting before etcd lets another replica lead."""
    fence_ttl_s: float = 300.0
    """How long a fenced incarnation stays refused. A fenced agent takes a new
    instance uid at once, so this only has to outlast a stale process that
    resumes late (SIGSTOP, a long GC, a VM pause)."""
    retry: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(initial_s=0.1, max_s=2.0))
    """Backoff of store writes, lease recovery and campaigns while the store is unreachable."""
    singleton_restart_s: float = 1.0
    """Wait before restarting a singleton loop that raised, while still leader."""

    def __post_init__(self) -> None:
        if not self.lease_ttl_s > 0:
            raise ValueError("lease_ttl_s must be positive")
        if not 0 <= self.lease_loss_margin_s < self.lease_ttl_s:
            raise ValueError("lease_loss_margin_s must be in [0, lease_ttl_s)")
        if not self.fence_ttl_s > 0:
            raise ValueError("fence_ttl_s must be positive")
        if not self.singleton_restart_s > 0:
            raise ValueError("singleton_restart_s must be positive")
