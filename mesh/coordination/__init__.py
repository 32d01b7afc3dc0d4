"""State router replicas share: one interface, an embedded and an etcd implementation.

    store = open_store(url, prefix="/mesh/")    # None -> MemoryStore, http://... -> EtcdStore
    async with store:
        snap = await store.get_prefix("config/models/")
        async with store.watch_prefix("config/models/", start_revision=snap.revision + 1) as events:
            async for event in events: ...

See `store.py` for the semantics both implementations keep, `lease_keeper.py`
for lease ownership and local-clock loss detection, `etcd_watch.py` for watch
resumption and RESYNC, and `election.py` for leader election.
"""

from mesh.coordination.backoff import Backoff, BackoffPolicy
from mesh.coordination.clock import ManualSleepClock, SleepClock, SystemSleepClock
from mesh.coordination.election import ElectionConfig, LeaderElection
from mesh.coordination.etcd_store import EtcdStore, EtcdStoreConfig
from mesh.coordination.etcd_watch import ResumableWatch
from mesh.coordination.lease_keeper import LeaseKeeper, LeaseKeeperConfig, Recovery
from mesh.coordination.memory_store import MemoryStore, MemoryStoreConfig
from mesh.coordination.store import DEFAULT_PREFIX, CoordinationStore, WatchStream
from mesh.coordination.store_url import open_store, parse_etcd_url
from mesh.coordination.types import (
    Condition,
    CounterWrite,
    Delete,
    EventKind,
    KeyValue,
    LeaseGrant,
    LeaseLostError,
    Put,
    Snapshot,
    TxnResult,
    WatchEvent,
)

__all__ = [
    "DEFAULT_PREFIX",
    "Backoff",
    "BackoffPolicy",
    "Condition",
    "CoordinationStore",
    "CounterWrite",
    "Delete",
    "ElectionConfig",
    "EtcdStore",
    "EtcdStoreConfig",
    "EventKind",
    "KeyValue",
    "LeaderElection",
    "LeaseGrant",
    "LeaseKeeper",
    "LeaseKeeperConfig",
    "LeaseLostError",
    "ManualSleepClock",
    "MemoryStore",
    "MemoryStoreConfig",
    "Put",
    "Recovery",
    "ResumableWatch",
    "SleepClock",
    "Snapshot",
    "SystemSleepClock",
    "TxnResult",
    "WatchEvent",
    "WatchStream",
    "open_store",
    "parse_etcd_url",
]
