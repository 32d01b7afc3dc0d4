"""Which workers hold the current config: pure functions over a snapshot.

A worker has ACKed a bundle's config when the bundle config hash it reports
(in its status, or in a ConfigAck) equals the hash the router computes for
that bundle. The hash covers everything routable to the bundle, and configs
are append-only, so a worker that reports the current hash also holds every
earlier write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mesh.config_api.api import BundleAckStatus


@dataclass(frozen=True)
class WorkerConfigView:
    """What the router knows of one connected worker's config."""

    worker_id: str
    """The worker."""
    bundle_key: str
    """Its bundle, case-folded."""
    hashes: frozenset[str]
    """Bundle config hashes it reported: the latest status and the latest ConfigAck."""


@dataclass(frozen=True)
class AckProgress:
    """How far a write has reached the workers of its eligible bundles."""

    eligible_bundles_count: int
    """Bundles the write's profiles route to."""
    eligible_bundles_with_workers_count: int
    """Of those, bundles with at least one connected worker."""
    acked_workers: tuple[str, ...]
    """Workers of eligible bundles that report their bundle's expected hash, sorted."""
    pending_workers: tuple[str, ...]
    """Workers of eligible bundles that do not (yet), sorted."""
    worker_ack_pending: bool
    """Some eligible bundle with workers has no worker that ACKed."""

    @property
    def total_eligible(self) -> int:
        return len(self.acked_workers) + len(self.pending_workers)


def bundle_ack_status(
    bundle: str, expected_hash: str, workers: Iterable[WorkerConfigView]
) -> BundleAckStatus:
    """The ACK view of one bundle over the connected workers."""
    key = bundle.lower()
    acked: list[str] = []
    pending: list[str] = []
    for worker in workers:
        if worker.bundle_key != key:
            continue
        (acked if expected_hash in worker.hashes else pending).append(worker.worker_id)
    return BundleAckStatus(bundle, expected_hash, tuple(sorted(acked)), tuple(sorted(pending)))


def ack_progress(
    eligible_bundles: Sequence[str], expected_hashes: Mapping[str, str], workers: Sequence[WorkerConfigView]
) -> AckProgress:
    """Progress over `eligible_bundles`; `expected_hashes` maps each bundle name to its hash."""
    acked: list[str] = []
    pending: list[str] = []
    with_workers = 0
    missing_ack = False
    for bundle in eligible_bundles:
        status = bundle_ack_status(bundle, expected_hashes.get(bundle, ""), workers)
        if status.acked_workers or status.pending_workers:
            with_workers += 1
            missing_ack = missing_ack or not status.acked_workers
        acked.extend(status.acked_workers)
        pending.extend(status.pending_workers)
    return AckProgress(
        eligible_bundles_count=len(eligible_bundles),
        eligible_bundles_with_workers_count=with_workers,
        acked_workers=tuple(sorted(acked)),
        pending_workers=tuple(sorted(pending)),
        worker_ack_pending=missing_ack,
    )
