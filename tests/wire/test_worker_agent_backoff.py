"""Reconnect backoff: jittered, exponential, capped; a pure function of attempt and rng."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker_agent.config import ReconnectPolicy
from worker_agent.router_link import reconnect_delay_s

POLICY = ReconnectPolicy(initial_s=0.1, multiplier=2.0, max_s=5.0, jitter=0.5)


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("attempt", "without_jitter_s"),
    [(0, 0.1), (1, 0.2), (2, 0.4), (5, 3.2), (6, 5.0), (60, 5.0), (10_000, 5.0)],
)
def test_delay_doubles_up_to_the_cap(attempt, without_jitter_s):
    assert reconnect_delay_s(attempt, POLICY, FixedRandom(0.0)) == pytest.approx(without_jitter_s)
    # Full jitter draw takes away at most half.
    assert reconnect_delay_s(attempt, POLICY, FixedRandom(0.999999)) == pytest.approx(
        without_jitter_s / 2, rel=1e-5
    )


@given(attempt=st.integers(0, 200), seed=st.integers(0, 2**32))
def test_delay_stays_within_the_jitter_band(attempt, seed):
    delay_s = reconnect_delay_s(attempt, POLICY, random.Random(seed))
    base_s = min(POLICY.max_s, POLICY.initial_s * POLICY.multiplier ** min(attempt, 64))
    assert base_s * (1 - POLICY.jitter) <= delay_s <= base_s


def test_the_same_seed_gives_the_same_schedule():
    first = [reconnect_delay_s(n, POLICY, rng) for rng in [random.Random(7)] for n in range(8)]
    second = [reconnect_delay_s(n, POLICY, rng) for rng in [random.Random(7)] for n in range(8)]
    assert first == second


def test_policy_refuses_nonsense():
    with pytest.raises(ValueError):
        ReconnectPolicy(initial_s=1.0, max_s=0.5)
    with pytest.raises(ValueError):
        ReconnectPolicy(jitter=1.5)
