"""A tenant pool's specification: what a client asked for, validated once.

Pure: no I/O, no clock. `parse_pool_spec` turns the wire fields (REST JSON or
the gRPC `PoolSpec`, already unpacked to Python values) into a `PoolSpec` or
raises `MeshError(INVALID_INPUT)` naming the field at fault. Names and
machine profiles are stored lower-case, because routing compares them
case-insensitively and two spellings of one pool must be one pool.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mesh.errors import ErrorCode, MeshError

DEFAULT_POOL = "default"
"""The shared fleet's name. It is not a tenant pool: it cannot be created or deleted."""

POOL_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
# The facade's X-SIE-MACHINE-PROFILE grammar: a pool asking for a profile no
# request could name would never serve anything.
MACHINE_PROFILE_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
BUNDLE_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")

# Fields sie-sdk may send that this mesh understands only in their default form.
_DEFAULT_QUEUE_POOL = "default"


@dataclass(frozen=True)
class PoolLimits:
    """Bounds a pool specification must stay within."""

    default_ttl_s: float = 1200.0
    """TTL of a pool whose client gave none (the SIE default)."""
    min_ttl_s: float = 10.0
    """Shortest TTL accepted: below it a client's renewals race the expiry."""
    max_ttl_s: float = 7 * 24 * 3600.0
    """Longest TTL accepted: an abandoned pool must give its workers back some day."""
    max_profiles: int = 64
    """Most machine profiles one pool may name (gpus and gpu_caps together)."""
    max_workers_per_profile: int = 10_000
    """Largest count in `gpus` / `gpu_caps`."""
    max_minimum_worker_count: int = 10_000
    """Largest `minimum_worker_count`."""

    def __post_init__(self) -> None:
        if not 0 < self.min_ttl_s <= self.default_ttl_s <= self.max_ttl_s:
            raise ValueError("PoolLimits needs 0 < min_ttl_s <= default_ttl_s <= max_ttl_s")
        if self.max_profiles < 1 or self.max_workers_per_profile < 1 or self.max_minimum_worker_count < 0:
            raise ValueError("PoolLimits counts must be positive")


@dataclass(frozen=True)
class PoolSpec:
    """A validated pool specification. Build it with `parse_pool_spec`."""

    name: str
    """Lower-case, `^[a-z0-9_-]{1,128}$`."""
    gpus: Mapping[str, int] = field(default_factory=dict)
    """Lower-case machine profile -> workers wanted (>= 1 each)."""
    gpu_caps: Mapping[str, int] = field(default_factory=dict)
    """Lower-case machine profile -> most workers assigned (>= the wanted count)."""
    ttl_s: float | None = None
    """Seconds the pool lives after its last renewal; None until the pool service applies its default."""
    minimum_worker_count: int = 0
    """Workers the pool holds at least, whatever their profile (within the allowed profiles)."""
    bundle: str = ""
    """Lower-case bundle every assigned worker must run; "" for any."""

    @property
    def allowed_profiles(self) -> frozenset[str]:
        """Profiles the pool may hold: those it names; every profile when it names none."""
        return frozenset(self.gpus) | frozenset(self.gpu_caps)

    def allows_profile(self, machine_profile: str) -> bool:
        allowed = self.allowed_profiles
        return not allowed or machine_profile in allowed

    def cap(self, machine_profile: str) -> int | None:
        """Most workers of this profile; None for no bound."""
        return self.gpu_caps.get(machine_profile)

    def to_json(self) -> dict[str, Any]:
        """The reference's `spec` object."""
        return {
            "name": self.name,
            "bundle": self.bundle or None,
            "gpus": dict(sorted(self.gpus.items())),
            "gpu_caps": dict(sorted(self.gpu_caps.items())),
            "ttl_seconds": None if self.ttl_s is None else _whole_seconds(self.ttl_s),
            "minimum_worker_count": self.minimum_worker_count,
        }


PERMISSIVE_LIMITS = PoolLimits(
    min_ttl_s=1e-3,
    default_ttl_s=1200.0,
    max_ttl_s=float("inf"),
    max_profiles=1 << 30,
    max_workers_per_profile=1 << 30,
    max_minimum_worker_count=1 << 30,
)
"""Shape checks only: what edges parse with before the pool service applies its own limits."""


def _whole_seconds(ttl_s: float) -> int | float:
    return int(ttl_s) if float(ttl_s).is_integer() else ttl_s


def _invalid(field_name: str, message: str) -> MeshError:
    return MeshError(ErrorCode.INVALID_INPUT, f"{field_name}: {message}", field=field_name)


def parse_pool_name(name: Any, *, field_name: str = "name") -> str:
    """The stored (lower-case) form of a pool name, or INVALID_INPUT."""
    if not isinstance(name, str) or not POOL_NAME_PATTERN.fullmatch(name):
        raise _invalid(field_name, "pool names match ^[A-Za-z0-9_-]{1,128}$")
    return name.lower()


def _is_count(value: Any) -> bool:
    # bool is an int in Python, but `true` is not a worker count.
    return isinstance(value, int) and not isinstance(value, bool)


def _profile_counts(raw: Any, field_name: str, limits: PoolLimits, *, minimum: int) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _invalid(field_name, "expected an object of machine profile -> worker count")
    counts: dict[str, int] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise _invalid(field_name, "machine profile names are strings")
        profile = key.strip().lower()
        if not MACHINE_PROFILE_PATTERN.fullmatch(profile):
            raise _invalid(f"{field_name}.{key[:64]}", "not a machine profile name")
        if profile in counts:
            raise _invalid(f"{field_name}.{key[:64]}", f"names machine profile {profile!r} twice")
        if not _is_count(value) or not minimum <= value <= limits.max_workers_per_profile:
            raise _invalid(
                f"{field_name}.{profile}",
                f"expected an integer from {minimum} to {limits.max_workers_per_profile}",
            )
        counts[profile] = value
    return counts


def parse_pool_spec(
    *,
    name: Any,
    gpus: Any = None,
    gpu_caps: Any = None,
    ttl_seconds: Any = None,
    minimum_worker_count: Any = None,
    bundle: Any = None,
    queue_pool: Any = None,
    pinned_models: Any = None,
    limits: PoolLimits | None = None,
) -> PoolSpec:
    """A `PoolSpec` from wire values (None: not given), or INVALID_INPUT naming the field.

    `queue_pool` and `pinned_models` are sie-sdk fields this mesh has no use
    for: accepted in their default form (one fleet, nothing pinned) and
    refused otherwise, so a client never believes it got what it asked for.
    """
    limits = limits or PoolLimits()
    pool_name = parse_pool_name(name)
    wanted = _profile_counts(gpus, "gpus", limits, minimum=1)
    caps = _profile_counts(gpu_caps, "gpu_caps", limits, minimum=0)
    for profile, count in wanted.items():
        cap = caps.get(profile)
        if cap is not None and cap < count:
            raise _invalid(f"gpu_caps.{profile}", f"cap {cap} is below the {count} workers gpus asks for")
    if len(set(wanted) | set(caps)) > limits.max_profiles:
        raise _invalid("gpus", f"at most {limits.max_profiles} machine profiles per pool")

    ttl_s: float | None
    if ttl_seconds is None or (ttl_seconds == 0 and not isinstance(ttl_seconds, bool)):
        # 0 is the proto3 default: "not given". The pool service applies its default.
        ttl_s = None
    elif isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int | float):
        raise _invalid("ttl_seconds", "expected a number of seconds")
    elif not limits.min_ttl_s <= ttl_seconds <= limits.max_ttl_s:
        raise _invalid("ttl_seconds", f"expected {limits.min_ttl_s:g} to {limits.max_ttl_s:g} seconds")
    else:
        ttl_s = float(ttl_seconds)

    if minimum_worker_count is None:
        minimum = 0
    elif (
        not _is_count(minimum_worker_count)
        or not 0 <= minimum_worker_count <= limits.max_minimum_worker_count
    ):
        raise _invalid(
            "minimum_worker_count", f"expected an integer from 0 to {limits.max_minimum_worker_count}"
        )
    else:
        minimum = minimum_worker_count
    profiles = set(wanted) | set(caps)
    if profiles and all(profile in caps for profile in profiles) and sum(caps.values()) < minimum:
        raise _invalid(
            "minimum_worker_count",
            f"{minimum} workers cannot fit under gpu_caps, which allow {sum(caps.values())} in all",
        )

    if bundle is None or bundle == "":
        bundle_name = ""
    elif not isinstance(bundle, str) or not BUNDLE_PATTERN.fullmatch(bundle.strip().lower()):
        raise _invalid("bundle", "not a bundle name")
    else:
        bundle_name = bundle.strip().lower()

    if queue_pool not in (None, "", _DEFAULT_QUEUE_POOL):
        raise _invalid("queue_pool", "this mesh has one worker fleet; only 'default' is supported")
    if pinned_models not in (None, [], ()):
        raise _invalid("pinned_models", "pinning models to a pool is not supported by this mesh")

    return PoolSpec(
        name=pool_name,
        gpus=dict(sorted(wanted.items())),
        gpu_caps=dict(sorted(caps.items())),
        ttl_s=ttl_s,
        minimum_worker_count=minimum,
        bundle=bundle_name,
    )


def pool_spec_from_json(body: Any, *, limits: PoolLimits = PERMISSIVE_LIMITS) -> PoolSpec:
    """`parse_pool_spec` over a decoded REST body (`POST /v1/pools`); unknown keys are ignored,
    as the SIE gateway ignores them, so newer clients keep working."""
    if not isinstance(body, Mapping):
        raise _invalid("body", "expected a JSON object")
    if "name" not in body:
        raise _invalid("name", "required")
    return parse_pool_spec(
        name=body.get("name"),
        gpus=body.get("gpus"),
        gpu_caps=body.get("gpu_caps"),
        ttl_seconds=body.get("ttl_seconds"),
        minimum_worker_count=body.get("minimum_worker_count"),
        bundle=body.get("bundle"),
        queue_pool=body.get("queue_pool"),
        pinned_models=body.get("pinned_models"),
        limits=limits,
    )


def pool_spec_from_stored(raw: Mapping[str, Any]) -> PoolSpec:
    """A spec read back from the store (written by `PoolSpec.to_json`); checked for shape only,
    so a record written under other limits still reads."""
    return parse_pool_spec(
        name=raw.get("name"),
        gpus=raw.get("gpus"),
        gpu_caps=raw.get("gpu_caps"),
        ttl_seconds=raw.get("ttl_seconds"),
        minimum_worker_count=raw.get("minimum_worker_count"),
        bundle=raw.get("bundle"),
        limits=PERMISSIVE_LIMITS,
    )


def apply_limits(spec: PoolSpec, limits: PoolLimits) -> PoolSpec:
    """`spec` checked against the pool service's own limits, with its default TTL filled in.

    Edges (REST, gRPC) parse with `PERMISSIVE_LIMITS`: policy lives with the
    authority, so a facade in another process never disagrees with its router.
    """
    checked = parse_pool_spec(
        name=spec.name,
        gpus=dict(spec.gpus),
        gpu_caps=dict(spec.gpu_caps),
        ttl_seconds=spec.ttl_s,
        minimum_worker_count=spec.minimum_worker_count,
        bundle=spec.bundle,
        limits=limits,
    )
    if checked.ttl_s is None:
        checked = dataclasses.replace(checked, ttl_s=limits.default_ttl_s)
    return checked
