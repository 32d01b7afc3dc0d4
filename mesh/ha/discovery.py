"""Which router replicas a client keeps a link to, as the set changes.

Worker agents (one registration stream per replica) and the HTTP facade (one
gRPC channel per replica, shared by its three clients) find routers the same
way. Three sources, in any mix; the set is their union:

- static addresses, `--router 10.0.0.5:50051,10.0.0.6:50051`;
- DNS names, `--router dns:///router-headless:50051`, re-resolved every
  `dns_refresh_s`: a Kubernetes headless service resolves to one address per
  ready router pod;
- etcd, `--etcd http://etcd:2379`: every replica registers
  `routers/{router_id}` (its advertise address) under its lease; the prefix is
  listed, then watched, so a new replica is dialled within a watch round trip
  and a drained one (lease revoked) is dropped at once.

A source that fails (DNS error, etcd away) keeps its last answer: losing the
way to *find* routers is no reason to drop links to routers that work.

`RouterDiscovery` only reports sets, to every subscriber; each client
reconciles its own links (`WorkerAgent` adds a `RouterLink` per new address
and retires those of addresses that left; `mesh.replica_channels` opens and
retires channels). The owner runs it: `await discovery.run()` in a task it
owns, or `async with discovery:`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Self

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


def parse_router_specs(text: str) -> tuple[str, ...]:
    """`a:1, dns:///name:2` -> ("a:1", "dns:///name:2"), each checked.

    Blank entries (a trailing comma) are skipped. Raises ValueError, worded
    for a command line, for an empty list, a bad spec or one listed twice.
    """
    specs = tuple(part.strip() for part in text.split(",") if part.strip())
    if not specs:
        raise ValueError("no router address given")
    split_router_specs(specs)
    repeated = sorted({spec for spec in specs if specs.count(spec) > 1})
    if repeated:
        raise ValueError(f"router {repeated[0]!r} is listed twice")
    return specs


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
    """`host:port` or `[v6]:port`, as gRPC dials it; raises ValueError saying what is wrong."""
    host, separator, port = address.rpartition(":")
    if not separator or not host or host == "[]":
        raise ValueError(f"{address!r} is not HOST:PORT")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"{address!r} is not HOST:PORT: unbalanced IPv6 bracket")
    if ":" in host and not host.startswith("["):
        # gRPC would read the last group of a bare IPv6 address as the port.
        raise ValueError(f"{address!r} is not HOST:PORT: write IPv6 hosts as [addr]:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not HOST:PORT: the port must be 1-65535")
    return address


def dial_address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, through the system resolver (so /etc/hosts and search domains apply)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class DiscoveryConfig:
    """Where router replicas are found."""

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
    """Follows every source and reports the union of their router addresses to each subscriber, on every change.

    Subscribers are called synchronously from the task that follows the
    sources, so they must not block; the set they get is the new `current`.
    """

    def __init__(
        self,
        config: DiscoveryConfig,
        on_change: Callable[[frozenset[str]], None] | None = None,
        *,
        resolver: Resolver = system_resolver,
        open_etcd: Callable[[str, str], CoordinationStore] = open_store,
        clock: SleepClock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """
        config: the sources.
        on_change: a first subscriber (see `subscribe`), for an owner that is its only reader.
        resolver / open_etcd / clock / rng: injected for tests.
        """
        self._config = config
        self._subscribers: list[Callable[[frozenset[str]], None]] = [on_change] if on_change else []
        self._resolver = resolver
        self._open_etcd = open_etcd
        self._clock = clock or SystemSleepClock()
        self._rng = rng or random.Random()
        self._found: dict[str, frozenset[str]] = {"static": frozenset(config.static)}
        self._current = frozenset(config.static)
        self._following: asyncio.Task[None] | None = None
        self.etcd_listed = asyncio.Event()
        """Set once etcd's `routers/` prefix has been read (tests, diagnostics)."""

    @property
    def current(self) -> frozenset[str]:
        """The addresses to keep a link to now. Static addresses from the start."""
        return self._current

    def subscribe(self, on_change: Callable[[frozenset[str]], None]) -> Callable[[], None]:
        """Call `on_change(addresses)` on every change from now on; returns a function that stops it.

        Read `current` in the same step (no await in between) for the set as it is now.
        """
        self._subscribers.append(on_change)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(on_change)

        return unsubscribe

    async def run(self) -> None:
        """Follow every dynamic source until cancelled; returns at once when there is none."""
        async with asyncio.TaskGroup() as tasks:
            for name in self._config.dns:
                tasks.create_task(self._follow_dns(name), name=f"discover-{name}")
            if self._config.etcd_url:
                tasks.create_task(self._follow_etcd(self._config.etcd_url), name="discover-etcd")

    async def start(self) -> None:
        """Run `run()` in a task this object owns, until `close()`. Returns at once."""
        if self._following is None and self._config.dynamic:
            self._following = asyncio.create_task(self.run(), name="router-discovery")
            self._following.add_done_callback(_log_failure)

    async def close(self) -> None:
        """Stop following (the last set stands); idempotent."""
        following, self._following = self._following, None
        if following is not None:
            following.cancel()
            # A failure was logged when it happened; closing is not the place to raise it.
            await asyncio.gather(following, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

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
            for on_change in list(self._subscribers):
                on_change(current)

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


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # The sources catch what they expect (DNS and etcd errors); this is a bug.
        log.error("router discovery stopped; the router set is frozen", exc_info=task.exception())


def _address(kv: KeyValue) -> str | None:
    try:
        return check_address(RouterRecord.decode(kv.value).address)
    except ValueError as error:
        log.warning("ignoring router record %s: %s", kv.key, error)
        return None
