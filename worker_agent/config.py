"""Configuration of a worker agent: frozen, validated at construction."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from mesh.coordination import DEFAULT_PREFIX
from mesh.ha import DiscoveryConfig, split_router_specs

DEFAULT_MAX_BATCH_TOKENS = 16384
"""Token budget of a batch when neither the flags nor the model's profile set one."""


def default_worker_id() -> str:
    """`{hostname}-{pid}`: unique per process on a host, readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class ReconnectPolicy:
    """Jittered exponential backoff between attempts to reach one router.

    Attempt n (0 after a stream that had been welcomed) waits
    `min(max_s, initial_s * multiplier**n)`, scaled by a random factor in
    `[1 - jitter, 1]`, so a fleet that lost a router does not come back in step.
    """

    initial_s: float = 0.1
    """Base delay of the first attempt."""
    multiplier: float = 2.0
    """Growth of the delay per failed attempt."""
    max_s: float = 5.0
    """Longest delay between attempts."""
    jitter: float = 0.5
    """Fraction of the delay that is random, in [0, 1]."""

    def __post_init__(self) -> None:
        if (
            self.initial_s < 0
            or self.max_s < self.initial_s
            or self.multiplier < 1
            or not 0 <= self.jitter <= 1
        ):
            raise ValueError(f"invalid reconnect policy {self}")


@dataclass(frozen=True)
class LinkSettings:
    """How the agent talks to each router on its registration stream."""

    status_interval_s: float = 0.2
    """Status cadence until a router's Welcome asks for another."""
    result_coalesce_s: float = 0.0
    """While other tasks of a stream are still open, how long finished results
    wait for company before they are written. 0 (the default) writes at once:
    results already leave in batches (a model batch finishes together, and what
    queues while a write is in flight shares the next one), and a wait of 0.5 ms
    measured 5-10% fewer requests per second through the router and the facade
    benchmarks at concurrency 16 and 64, for no fewer writes."""
    status_coalesce_s: float = 0.05
    """Queue-depth-only changes are reported at most this often; other changes at once.
    The router sending a task counts it itself, so reports only tell other
    replicas of this worker's load: a busy worker sends 20 a second rather
    than 100 (each costs a stream write on both ends)."""
    connect_timeout_s: float = 5.0
    """Time to send Hello and receive Welcome on a new stream."""
    write_timeout_s: float = 5.0
    """Time one message may take to go out before the stream is deemed broken."""
    close_timeout_s: float = 1.0
    """Time a closing stream gets to flush and see the router hang up."""
    keepalive_time_s: float = 20.0
    """HTTP/2 ping interval on an idle connection; the router must permit it."""
    keepalive_timeout_s: float = 10.0
    """A ping unanswered this long closes the connection (and so the stream)."""
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    """Backoff between attempts when a stream fails or a router is down."""

    def __post_init__(self) -> None:
        for name in (
            "status_interval_s",
            "connect_timeout_s",
            "write_timeout_s",
            "close_timeout_s",
            "keepalive_time_s",
            "keepalive_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.status_coalesce_s < 0 or self.result_coalesce_s < 0:
            raise ValueError("status_coalesce_s and result_coalesce_s must not be negative")


@dataclass(frozen=True)
class AgentConfig:
    """One worker agent: who it is, what it serves, how it batches and queues."""

    routers: tuple[str, ...] = ()
    """Router addresses (`host:port`) and DNS names (`dns:///name:port`, every address
    a replica); the agent keeps one stream to each replica."""
    worker_id: str = field(default_factory=default_worker_id)
    """Stable name of this worker across restarts (the instance uid changes)."""
    bundle: str = "default"
    """Bundle whose models this worker serves."""
    machine_profile: str = "cpu"
    """Machine profile (GPU type) requests select workers by."""
    pool: str = ""
    """Pool this worker is reserved for; "" for the shared fleet."""
    gpu_count: int = 1
    """Accelerators on this node, as reported to routers."""
    max_batch_requests: int = 32
    """Requests per batch at most."""
    max_batch_tokens: int = 0
    """Estimated tokens per batch at most; 0 takes each profile's `max_batch_tokens`."""
    max_batch_wait_s: float = 0.0
    """Longest a queued request waits for its batch to fill on an idle backend.

    0 (the default) is continuous batching: a request runs as soon as a batch
    slot is free, and requests arriving while a batch runs form the next one,
    so batches grow with load and an idle worker adds no latency."""
    queue_capacity: int = 256
    """Requests waiting to run at most; more are answered QUEUE_FULL."""
    max_concurrent_batches: int = 1
    """Batches running on the backend at once."""
    preload: bool = False
    """Load every model of the bundle at start (and report ready only then)."""
    default_task_budget_s: float = 60.0
    """Deadline of a task that arrives without a budget."""
    expiry_sweep_s: float = 0.05
    """How often queued work is checked for expired deadlines."""
    health_port: int | None = None
    """Port of the grpc.health.v1 endpoint; None for none, 0 for any free port."""
    health_host: str = "0.0.0.0"
    """Address the health endpoint binds."""
    link: LinkSettings = field(default_factory=LinkSettings)
    """Registration stream settings, the same for every router."""
    etcd_url: str | None = None
    """etcd endpoints to discover router replicas from (`routers/` prefix, watched); None: no etcd."""
    etcd_prefix: str = DEFAULT_PREFIX
    """The mesh's key prefix in etcd, as the routers' `--etcd-prefix`."""
    dns_refresh_s: float = 5.0
    """How often `dns:///` router names are resolved again."""

    def __post_init__(self) -> None:
        if isinstance(self.routers, str):
            raise TypeError("routers is a tuple of addresses, not a string")
        object.__setattr__(self, "routers", tuple(self.routers))
        if not self.routers and not self.etcd_url:
            raise ValueError("at least one router address, DNS name or etcd URL is needed")
        # Parse the router specs now: a bad one fails here, not when the agent starts.
        self.discovery  # noqa: B018
        if not self.worker_id.strip():
            raise ValueError("worker_id must not be empty")
        if self.max_batch_requests < 1 or self.max_concurrent_batches < 1 or self.queue_capacity < 1:
            raise ValueError(
                "max_batch_requests, max_concurrent_batches and queue_capacity must be at least 1"
            )
        if self.max_batch_tokens < 0 or self.max_batch_wait_s < 0 or self.gpu_count < 0:
            raise ValueError("max_batch_tokens, max_batch_wait_s and gpu_count must not be negative")
        if self.default_task_budget_s <= 0 or self.expiry_sweep_s <= 0:
            raise ValueError("default_task_budget_s and expiry_sweep_s must be positive")
        if self.health_port is not None and not 0 <= self.health_port <= 65535:
            raise ValueError("health_port must be a port number")

    @property
    def discovery(self) -> DiscoveryConfig:
        """Where the agent finds its routers (static addresses, DNS names, etcd)."""
        static, names = split_router_specs(self.routers)
        return DiscoveryConfig(
            static=static,
            dns=names,
            etcd_url=self.etcd_url,
            etcd_prefix=self.etcd_prefix,
            dns_refresh_s=self.dns_refresh_s,
        )
