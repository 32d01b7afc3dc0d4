"""Prometheus metrics of one facade app, under the SIE gateway's seed names.

Each app owns its CollectorRegistry, so two apps in one process (tests, the
router with an in-process facade) never collide on the global registry.
The two per-request series (request count, latency histogram) are plain
counts kept by `_RequestStats` and turned into metric families at scrape
time: prometheus_client's children take a lock and walk the buckets in
Python on every observation, a measurable share of a request at the rates
the facade serves. The event loop is the only writer, so no lock is needed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mesh.v1 import cluster_pb2

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Machine profiles come from a client header: past this many distinct values
# they fold into "other" so a client cannot grow the series without bound.
_MAX_PROFILE_LABELS = 64
_OTHER = "other"


class FacadeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._request_stats = _RequestStats()
        self.registry.register(self._request_stats)
        self._provisioning = Counter(
            "sie_gateway_provisioning_responses_total",
            "Requests answered 'provisioning' (202 or 503 PROVISIONING): no capacity for them yet.",
            ["machine_profile"],
            registry=self.registry,
        )
        self._rejected = Counter(
            "sie_gateway_rejected_requests_total",
            "Requests refused by the facade itself, before reaching the mesh, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self._workers = Gauge(
            "sie_gateway_workers",
            "Workers the mesh knows, by health.",
            ["status"],
            registry=self.registry,
        )
        self._queue_depth = Gauge(
            "sie_gateway_worker_queue_depth",
            "Requests queued or running on each worker.",
            ["worker", "machine_profile", "bundle"],
            registry=self.registry,
        )
        self._pending_demand = Gauge(
            "sie_gateway_pending_demand",
            "Requests that found no capacity, by what they needed (for autoscalers).",
            ["machine_profile", "bundle"],
            registry=self.registry,
        )
        self._config_epoch = Gauge(
            "sie_gateway_config_epoch",
            "Config epoch of the router that answered: bumped by every model config write.",
            registry=self.registry,
        )
        self._bootstrap_degraded = Gauge(
            "sie_gateway_config_bootstrap_degraded",
            "1 while the router serves built-in and filesystem configs only (its store did not answer at start).",
            registry=self.registry,
        )
        self._router_counts = _RouterCounts()
        self.registry.register(self._router_counts)
        self._store_connected = Gauge(
            "sie_gateway_store_connected",
            "1 while the router reaches its coordination store (etcd), 0 while it runs from memory.",
            registry=self.registry,
        )
        self._profiles: set[str] = set()

    def _profile_label(self, machine_profile: str) -> str:
        if machine_profile in self._profiles:
            return machine_profile
        if len(self._profiles) >= _MAX_PROFILE_LABELS:
            return _OTHER
        self._profiles.add(machine_profile)
        return machine_profile

    def observe_request(self, endpoint: str, status: int, machine_profile: str, latency_s: float) -> None:
        stats = self._request_stats
        key = (endpoint, status, machine_profile)
        counts = stats.requests
        if key in counts:
            counts[key] += 1
        else:
            # A new label set: fold an unbounded profile into "other" first.
            folded = (endpoint, status, self._profile_label(machine_profile))
            stats.labels[key] = folded
            counts[key] = 1
        latency = stats.latency.get(endpoint)
        if latency is None:
            latency = stats.latency[endpoint] = _Latency()
        # Buckets hold observations <= their bound; the last slot is +Inf.
        latency.buckets[bisect.bisect_left(_LATENCY_BUCKETS_S, latency_s)] += 1
        latency.sum_s += latency_s

    def observe_provisioning(self, machine_profile: str) -> None:
        self._provisioning.labels(self._profile_label(machine_profile)).inc()

    def observe_rejected(self, reason: str) -> None:
        self._rejected.labels(reason).inc()

    def update_cluster(
        self,
        health: cluster_pb2.ClusterHealth | None,
        demand: Iterable[cluster_pb2.PendingDemand] = (),
    ) -> None:
        """Refresh the fleet gauges from a snapshot taken at scrape time.

        None (the mesh did not answer) clears them: a stale worker count
        would look like a healthy fleet to an alert.
        """
        self._workers.clear()
        self._queue_depth.clear()
        self._pending_demand.clear()
        if health is None:
            self._router_counts.update(None)
            return
        self._config_epoch.set(health.config_epoch)
        self._bootstrap_degraded.set(1 if health.config_bootstrap_degraded else 0)
        self._router_counts.update(health)
        self._store_connected.set(1 if health.store_connected else 0)
        healthy = sum(1 for worker in health.workers if worker.healthy)
        self._workers.labels("healthy").set(healthy)
        self._workers.labels("unhealthy").set(len(health.workers) - healthy)
        for worker in health.workers:
            status = worker.status
            self._queue_depth.labels(worker.worker_id, status.machine_profile, status.bundle).set(
                sum(model.queue_depth for model in status.models)
            )
        for entry in demand:
            self._pending_demand.labels(entry.machine_profile, entry.bundle).inc(entry.requests)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RouterCounts:
    """Counters the router keeps (config deltas, pool events), re-exposed as
    Prometheus counters from the last cluster health read: the router owns
    the counts, the facade only shows them, so they are collected rather than
    incremented here."""

    def __init__(self) -> None:
        self._health: cluster_pb2.ClusterHealth | None = None

    def update(self, health: cluster_pb2.ClusterHealth | None) -> None:
        self._health = health

    def describe(self) -> list[CounterMetricFamily]:
        return [
            CounterMetricFamily(
                "sie_gateway_config_deltas", "Config changes by kind and result.", labels=["kind", "result"]
            ),
            CounterMetricFamily("sie_gateway_pool_events", "Pool events by event.", labels=["event"]),
        ]

    def collect(self) -> list[CounterMetricFamily]:
        deltas, pools = self.describe()
        if self._health is not None:
            for row in self._health.config_deltas:
                deltas.add_metric([row.kind, row.result], row.count)
            for row in self._health.pool_events:
                pools.add_metric([row.kind], row.count)
        return [deltas, pools]


class _Latency:
    __slots__ = ("buckets", "sum_s")

    def __init__(self) -> None:
        self.buckets = [0] * (len(_LATENCY_BUCKETS_S) + 1)
        self.sum_s = 0.0


class _RequestStats:
    """sie_gateway_requests_total and sie_gateway_request_latency_seconds from plain counts."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int, str], int] = {}
        """(endpoint, status, machine profile as sent) -> requests."""
        self.labels: dict[tuple[str, int, str], tuple[str, int, str]] = {}
        """The same keys -> their labels, the profile folded when there are too many."""
        self.latency: dict[str, _Latency] = {}

    def describe(self) -> list[CounterMetricFamily | HistogramMetricFamily]:
        return [
            CounterMetricFamily(
                "sie_gateway_requests",
                "HTTP requests answered, by endpoint, status and requested machine profile.",
                labels=["endpoint", "status", "machine_profile"],
            ),
            HistogramMetricFamily(
                "sie_gateway_request_latency_seconds",
                "Time from receiving a request to having its reply, by endpoint.",
                labels=["endpoint"],
            ),
        ]

    def collect(self) -> list[CounterMetricFamily | HistogramMetricFamily]:
        requests, latency = self.describe()
        totals: dict[tuple[str, int, str], int] = {}
        for key, count in list(self.requests.items()):
            label = self.labels[key]
            totals[label] = totals.get(label, 0) + count
        for (endpoint, status, profile), count in sorted(totals.items()):
            requests.add_metric([endpoint, str(status), profile], count)
        for endpoint, series in sorted(self.latency.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*_LATENCY_BUCKETS_S, float("inf")), series.buckets):
                cumulative += count
                buckets.append((_bound_label(bound), cumulative))
            latency.add_metric([endpoint], buckets, series.sum_s)
        return [requests, latency]


def _bound_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
