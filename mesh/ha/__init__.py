"""High availability: router replicas that agree through the coordination store.

    replica = Replica(store, router_id="r1", clock=SystemSleepClock(), wall_clock=SystemClock())
    await replica.start("10.0.0.5:50051")       # Router does this after it serves
    replica.leadership.run_while_leader("gc", collect_garbage)
    ...
    await replica.release()                     # on drain: every key of this replica vanishes at once

- `ReplicaLease` (replica_lease.py): the router's one lease, granted as soon
  as the store answers and recovered after every loss.
- `Membership` (membership.py): `routers/{id}`, `workers/{worker}/{router}`
  and `fenced/{worker}/{uid}`; the fence gate the registry checks on Hello.
- `Leadership` (leadership.py): continuous campaign; singleton loops run only
  while this replica leads.
- records.py: the key layout, and why a worker key is per router.
- `RouterDiscovery` (discovery.py): the other side -- which replicas a client
  (worker agent, HTTP facade) keeps a link to, from static addresses,
  `dns:///NAME:PORT` and etcd's `routers/` prefix.

Routing never waits on any of this: streams take workers in and out of the
registry at once; the store is the shared, slower view and the backstop.
"""

from mesh.ha.config import ReplicaConfig
from mesh.ha.discovery import (
    DiscoveryConfig,
    DnsName,
    Resolver,
    RouterDiscovery,
    check_address,
    dial_address,
    parse_dns_spec,
    parse_router_specs,
    split_router_specs,
    system_resolver,
)
from mesh.ha.fencing import FenceBook
from mesh.ha.leadership import Leadership, SingletonLoop
from mesh.ha.membership import Membership, read_routers, read_workers
from mesh.ha.records import (
    FENCED_PREFIX,
    LEADER_KEY,
    ROUTERS_PREFIX,
    WORKERS_PREFIX,
    FenceRecord,
    RouterRecord,
    WorkerRecord,
    fence_key,
    parse_fence_key,
    parse_worker_key,
    router_key,
    worker_key,
    worker_prefix,
)
from mesh.ha.replica import Replica
from mesh.ha.replica_lease import ReplicaLease

__all__ = [
    "FENCED_PREFIX",
    "LEADER_KEY",
    "ROUTERS_PREFIX",
    "WORKERS_PREFIX",
    "DiscoveryConfig",
    "DnsName",
    "FenceBook",
    "FenceRecord",
    "Leadership",
    "Membership",
    "Replica",
    "ReplicaConfig",
    "ReplicaLease",
    "Resolver",
    "RouterDiscovery",
    "RouterRecord",
    "SingletonLoop",
    "WorkerRecord",
    "check_address",
    "dial_address",
    "fence_key",
    "parse_dns_spec",
    "parse_fence_key",
    "parse_router_specs",
    "parse_worker_key",
    "read_routers",
    "read_workers",
    "router_key",
    "split_router_specs",
    "system_resolver",
    "worker_key",
    "worker_prefix",
]
