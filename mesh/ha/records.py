"""Where this package keeps things in the store, and what it writes there.

Keys are relative to the store prefix (default `/mesh/`). Ids are
percent-encoded as one path segment each (`/` becomes `%2F`), so a worker
id with a slash in it can never reach into another worker's keys.

| key | value | lease |
|---|---|---|
| `routers/{router_id}` | `RouterRecord` JSON | the router's own lease |
| `workers/{worker_id}/{router_id}` | `WorkerRecord` JSON | lease of that router |
| `fenced/{worker_id}/{instance_uid}` | `FenceRecord` JSON | a lease of its own, `fence_ttl_s`, never renewed |
| `leader` | router_id of the leader | the leader's lease |

Why a worker key per (worker, router) rather than one `workers/{worker_id}`:
every worker keeps a stream to every replica, so every replica "holds its
stream". One shared key would have N writers racing, and the first replica
to lose the stream would delete a registration the others still hold. With
one key per holder each replica writes and deletes only its own, under its
own lease: a worker is registered while any key under `workers/{worker_id}/`
exists, and a replica's crash takes exactly its own keys with it (lease
expiry, the slow backstop). A restarted worker (same id, new instance uid)
overwrites each replica's key with its new uid.

Pure: encoding, decoding, no I/O.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import asdict, dataclass
from typing import Any, Self

ROUTERS_PREFIX = "routers/"
WORKERS_PREFIX = "workers/"
FENCED_PREFIX = "fenced/"
LEADER_KEY = "leader"


def _segment(text: str) -> str:
    if not text:
        raise ValueError("an id in a store key must be non-empty")
    return urllib.parse.quote(text, safe="")


def _unsegment(text: str) -> str:
    return urllib.parse.unquote(text)


def router_key(router_id: str) -> str:
    return ROUTERS_PREFIX + _segment(router_id)


def worker_prefix(worker_id: str) -> str:
    """Every replica's registration of one worker."""
    return f"{WORKERS_PREFIX}{_segment(worker_id)}/"


def worker_key(worker_id: str, router_id: str) -> str:
    """One replica's registration of one worker."""
    return worker_prefix(worker_id) + _segment(router_id)


def fence_key(worker_id: str, instance_uid: str) -> str:
    return f"{FENCED_PREFIX}{_segment(worker_id)}/{_segment(instance_uid)}"


def parse_fence_key(key: str) -> tuple[str, str] | None:
    """(worker_id, instance_uid) of a `fenced/` key; None for anything else."""
    if not key.startswith(FENCED_PREFIX):
        return None
    parts = key[len(FENCED_PREFIX) :].split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return _unsegment(parts[0]), _unsegment(parts[1])


def parse_worker_key(key: str) -> tuple[str, str] | None:
    """(worker_id, router_id) of a `workers/` key; None for anything else."""
    if not key.startswith(WORKERS_PREFIX):
        return None
    parts = key[len(WORKERS_PREFIX) :].split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return _unsegment(parts[0]), _unsegment(parts[1])


def _decode_object(value: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{what} is not JSON: {value[:64]!r}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{what} is not a JSON object")  # noqa: TRY004 - callers catch ValueError for bad records
    return document


def _text(document: dict[str, Any], name: str, what: str, *, required: bool = True) -> str:
    value = document.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"{what} needs a non-empty string {name!r}")
    return value


@dataclass(frozen=True)
class RouterRecord:
    """A live router replica, as workers and other replicas find it."""

    router_id: str
    """The replica's stable name."""
    address: str
    """`host:port` workers dial (the advertise address, not necessarily the bind address)."""
    version: str
    """mesh version the replica runs."""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes) -> Self:
        """Raises ValueError for a value no replica would have written; unknown fields are ignored."""
        document = _decode_object(value, "router record")
        return cls(
            router_id=_text(document, "router_id", "router record"),
            address=_text(document, "address", "router record"),
            version=_text(document, "version", "router record", required=False),
        )


@dataclass(frozen=True)
class WorkerRecord:
    """One replica's registration of one worker incarnation."""

    worker_id: str
    instance_uid: str
    """The incarnation holding the stream; a fenced incarnation is never written."""
    router_id: str
    """The replica holding the stream (whose lease the key is on)."""
    bundle: str = ""
    machine_profile: str = ""
    pool: str = ""
    backend: str = ""
    agent_version: str = ""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes) -> Self:
        document = _decode_object(value, "worker record")
        return cls(
            worker_id=_text(document, "worker_id", "worker record"),
            instance_uid=_text(document, "instance_uid", "worker record"),
            router_id=_text(document, "router_id", "worker record"),
            **{
                name: _text(document, name, "worker record", required=False)
                for name in ("bundle", "machine_profile", "pool", "backend", "agent_version")
            },
        )


@dataclass(frozen=True)
class FenceRecord:
    """An incarnation no replica may accept again."""

    worker_id: str
    instance_uid: str
    router_id: str
    """The replica that fenced it."""
    reason: str
    fenced_at_s: float
    """Wall-clock seconds since the epoch, for people reading the store."""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()
