"""Choosing a store from the one URL an operator gives."""

from __future__ import annotations

import urllib.parse

from mesh.coordination.etcd_store import EtcdStore, EtcdStoreConfig, channel_target
from mesh.coordination.memory_store import MemoryStore, MemoryStoreConfig
from mesh.coordination.store import DEFAULT_PREFIX, CoordinationStore, normalize_prefix

DEFAULT_ETCD_PORT = 2379


def parse_etcd_url(url: str) -> tuple[str, ...]:
    """`http://h1:2379,h2:2379` (or `http://h1:2379,http://h2:2379`) -> ("h1:2379", "h2:2379").

    Raises ValueError with a message fit for the CLI to print.
    """
    parts = [part.strip() for part in url.split(",")]
    if not parts or not parts[0]:
        raise ValueError(f"etcd URL {url!r} is empty; expected e.g. http://127.0.0.1:2379")
    if "://" not in parts[0]:
        raise ValueError(f"etcd URL {url!r} must start with http://, e.g. http://127.0.0.1:2379")
    scheme = urllib.parse.urlsplit(parts[0]).scheme.lower()
    endpoints = []
    for part in parts:
        if not part:
            raise ValueError(f"etcd URL {url!r} has an empty endpoint between commas")
        if "://" not in part:
            part = f"{scheme}://{part}"
        split = urllib.parse.urlsplit(part)
        if split.scheme.lower() == "https":
            raise ValueError(f"etcd URL {part!r}: TLS (https) is not supported yet; use http://")
        if split.scheme.lower() != "http":
            raise ValueError(f"etcd URL {part!r}: scheme must be http://, e.g. http://127.0.0.1:2379")
        if split.path not in ("", "/") or split.query or split.fragment or split.username or split.password:
            raise ValueError(
                f"etcd URL {part!r}: give only scheme, host and port, e.g. http://127.0.0.1:2379"
            )
        try:
            port = split.port or DEFAULT_ETCD_PORT
        except ValueError:
            raise ValueError(f"etcd URL {part!r}: port must be a number from 1 to 65535") from None
        if not split.hostname:
            raise ValueError(f"etcd URL {part!r} names no host")
        host = f"[{split.hostname}]" if ":" in split.hostname else split.hostname
        endpoints.append(f"{host}:{port}")
    channel_target(endpoints)  # raises for lists gRPC cannot dial
    return tuple(endpoints)


def open_store(url: str | None, prefix: str = DEFAULT_PREFIX) -> CoordinationStore:
    """The store for `url`: None, "" or `memory://` -> MemoryStore; `http://...` -> EtcdStore.

    The store is not started: `await store.start()` (or use it as an async
    context manager). Raises ValueError for a malformed URL or prefix.
    """
    prefix = normalize_prefix(prefix)
    if url is None or not url.strip() or url.strip().lower() in ("memory", "memory://"):
        return MemoryStore(MemoryStoreConfig(prefix=prefix))
    return EtcdStore(EtcdStoreConfig(endpoints=parse_etcd_url(url.strip()), prefix=prefix))
