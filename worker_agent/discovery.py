"""Which router replicas the agent keeps a stream to, as the set changes.

Three sources, in any mix; the agent's set is their union:

- static addresses, `--router 10.0.0.5:50051,10.0.0.6:50051`;
- DNS names, `--router dns:///router-headless:50051`, re-resolved every
  `dns_refresh_s`: a Kubernetes headless service resolves to one address per
  ready router pod;
- etcd, `--etcd http://etcd:2379`: every replica registers
  `routers/{router_id}` (its advertise address) under its lease; the prefix is
  listed, then watched, so a new replica is dialled within a watch round trip
  and a drained one (lease revoked) is dropped at once.

A source that fails (DNS error, etcd away) keeps its last answer: losing the
way to *find* routers is no reason to drop streams to routers that work.

`RouterDiscovery` only reports sets; the agent reconciles its links
(`WorkerAgent` adds a `RouterLink` per new address and retires the links of
addresses that left -- a retired link keeps a live stream, it only stops
redialling, so a replica that lost etcd but still serves keeps its workers).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from mesh.coordination import (
    DEFAULT_PREFIX,
    Backoff,
    BackoffPolicy,
    CoordinationStore,
    EventKind,
    KeyValue,
    SleepClock,
    SystemSleepClock,
    open_store,
)
from mesh.errors import MeshError
from mesh.ha.records import ROUTERS_PREFIX, RouterRecord

log = logging.getLogger(__name__)

DNS_SCHEME = "dns:///"

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""`(host, port) -> IP addresses` (literals, v4 or v6). Raises OSError when the name does not resolve."""


@dataclass(frozen=True)
class DnsName:
    """A DNS name whose every address is a router replica on `port`."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{DNS_SCHEME}{self.host}:{self.port}"


def split_router_specs(specs: Sequence[str]) -> tuple[tuple[str, ...], tuple[DnsName, ...]]:
    """`("h:1", "dns:///name:2")` -> static addresses and DNS names. Raises ValueError for a bad spec."""
    static: list[str] = []
    names: list[DnsName] = []
    for spec in specs:
        if spec.startswith("dns:"):
            names.append(parse_dns_spec(spec))
        else:
            static.append(check_address(spec))
    return tuple(static), tuple(names)


def parse_dns_spec(spec: str) -> DnsName:
    """`dns:///name:port` (gRPC's own spelling; no DNS-server authority) -> DnsName."""
    if not spec.startswith(DNS_SCHEME):
        raise ValueError(f"{spec!r}: write DNS names as dns:///NAME:PORT")
    host, separator, port = spec[len(DNS_SCHEME) :].rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not separator or not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{spec!r} is not dns:///NAME:PORT")
    return DnsName(host, int(port))


def check_address(address: str) -> str:
    """`host:port` or `[v6]:port`; raises ValueError otherwise."""
    host, separator, port = address.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not HOST:PORT")
    return address


def dial_address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, through the system resolver (so /etc/hosts and search domains apply)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class DiscoveryConfig:
    """Where the agent finds router replicas."""

    static: tuple[str, ...] = ()
    """Addresses (`host:port`) always in the set."""
    dns: tuple[DnsName, ...] = ()
    """Names whose every address is a replica."""
    etcd_url: str | None = None
    """etcd endpoints to read the `routers/` prefix from; None for no etcd discovery."""
    etcd_prefix: str = DEFAULT_PREFIX
    """The mesh's key prefix in etcd (the routers' `--etcd-prefix`)."""
    dns_refresh_s: float = 5.0
    """How often DNS names are resolved again."""
    retry: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(initial_s=0.1, max_s=2.0))
    """Backoff of a source that failed (DNS error, etcd unreachable)."""

    def __post_init__(self) -> None:
        if not (self.static or self.dns or self.etcd_url):
            raise ValueError("router discovery needs a static address, a DNS name or etcd")
        if not self.dns_refresh_s > 0:
            raise ValueError("dns_refresh_s must be positive")

    @property
    def dynamic(self) -> bool:
        """Whether the set can change after start."""
        return bool(self.dns or self.etcd_url)


class RouterDiscovery:
    """Reports the union of every source's router addresses through `on_change`, on every change."""

    def __init__(
        self,
        config: DiscoveryConfig,
        on_change: Callable[[frozenset[str]], None],
        *,
        resolver: Resolver = system_resolver,
        open_etcd: Callable[[str, str], CoordinationStore] = open_store,
        clock: SleepClock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._on_change = on_change
        self._resolver = resolver
        self._open_etcd = open_etcd
        self._clock = clock or SystemSleepClock()
        self._rng = rng or random.Random()
        self._found: dict[str, frozenset[str]] = {"static": frozenset(config.static)}
        self._current = frozenset(config.static)
        self.etcd_listed = asyncio.Event()
        """Set once etcd's `routers/` prefix has been read (tests, diagnostics)."""

    @property
    def current(self) -> frozenset[str]:
        """The addresses to keep a stream to now. Static addresses from the start."""
        return self._current

    async def run(self) -> None:
        """Follow every dynamic source until cancelled; returns at once when there is none."""
        async with asyncio.TaskGroup() as tasks:
            for name in self._config.dns:
                tasks.create_task(self._follow_dns(name), name=f"discover-{name}")
            if self._config.etcd_url:
                tasks.create_task(self._follow_etcd(self._config.etcd_url), name="discover-etcd")

    def _report(self, source: str, addresses: frozenset[str]) -> None:
        if self._found.get(source) == addresses:
            return
        self._found[source] = addresses
        current = frozenset().union(*self._found.values())
        if current != self._current:
            log.info(
                "router set changed (%s): %s",
                source,
                ", ".join(sorted(current)) or "none",
            )
            self._current = current
            self._on_change(current)

    # -- DNS ---------------------------------------------------------------------------

    async def _follow_dns(self, name: DnsName) -> None:
        backoff = Backoff(self._config.retry, self._rng)
        while True:
            try:
                async with asyncio.timeout(self._config.dns_refresh_s):
                    ips = await self._resolver(name.host, name.port)
            except (OSError, TimeoutError) as error:
                # Keep the last answer: a resolver hiccup must not drop working streams.
                kept = len(self._found.get(str(name), ()))
                log.warning("resolving %s failed (%s); keeping its %d addresses", name, error, kept)
                await self._clock.sleep(min(backoff.next_delay_s(), self._config.dns_refresh_s))
                continue
            backoff.reset()
            self._report(str(name), frozenset(dial_address(ip, name.port) for ip in ips))
            await self._clock.sleep(self._config.dns_refresh_s)

    # -- etcd --------------------------------------------------------------------------

    async def _follow_etcd(self, url: str) -> None:
        store = self._open_etcd(url, self._config.etcd_prefix)
        try:
            await store.start()
            await self._list_and_watch(store)
        finally:
            await store.close()

    async def _list_and_watch(self, store: CoordinationStore) -> None:
        backoff = Backoff(self._config.retry, self._rng)
        while True:
            try:
                snapshot = await store.get_prefix(ROUTERS_PREFIX)
                records = {kv.key: address for kv in snapshot.items if (address := _address(kv))}
                self._report("etcd", frozenset(records.values()))
                self.etcd_listed.set()
                backoff.reset()
                async with store.watch_prefix(ROUTERS_PREFIX, start_revision=snapshot.revision + 1) as events:
                    async for event in events:
                        if event.kind is EventKind.RESYNC:
                            records = {kv.key: a for kv in event.snapshot if (a := _address(kv))}
                        elif event.kind is EventKind.DELETE:
                            records.pop(event.key, None)
                        elif event.kv is not None and (address := _address(event.kv)):
                            records[event.key] = address
                        self._report("etcd", frozenset(records.values()))
            except MeshError as error:
                log.info("router discovery from etcd failed (%s); retrying", error)
            await self._clock.sleep(backoff.next_delay_s())


def _address(kv: KeyValue) -> str | None:
    try:
        return check_address(RouterRecord.decode(kv.value).address)
    except ValueError as error:
        log.warning("ignoring router record %s: %s", kv.key, error)
        return None
