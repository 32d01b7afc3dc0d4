"""Jittered exponential backoff, pure: the caller sleeps."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """How long to wait between attempts that keep failing."""

    initial_s: float = 0.1
    """Ceiling of the first delay."""
    max_s: float = 2.0
    """Ceiling no delay exceeds however many attempts failed."""
    multiplier: float = 2.0
    """Growth of the ceiling per failed attempt."""

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s):
            raise ValueError("backoff needs 0 < initial_s <= max_s")
        if self.multiplier < 1:
            raise ValueError("backoff multiplier must be at least 1")


class Backoff:
    """Delays for successive failures of one operation.

    "Equal jitter": half the ceiling is fixed and half random, so retries
    from many replicas spread out without any of them retrying at once.
    """

    def __init__(self, policy: BackoffPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng
        self._failures = 0

    def next_delay_s(self) -> float:
        ceiling = min(self._policy.max_s, self._policy.initial_s * self._policy.multiplier**self._failures)
        self._failures = min(self._failures + 1, 64)
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self._failures = 0
