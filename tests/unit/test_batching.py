"""The batching policy: table tests and properties over random queues."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.v1 import common_pb2, inference_pb2
from worker_agent.batching import (
    BatchDecision,
    BatchLimits,
    decide_batch,
    estimate_request_tokens,
    estimate_text_tokens,
)


@dataclass(frozen=True)
class Queued:
    enqueued_at_s: float
    tokens: int


def queue(*entries: tuple[float, int]) -> list[Queued]:
    return [Queued(at, tokens) for at, tokens in entries]


LIMITS = BatchLimits(max_requests=4, max_tokens=100, max_wait_s=0.010)


@pytest.mark.parametrize(
    ("name", "entries", "now_s", "expected"),
    [
        ("empty queue waits for an arrival", (), 5.0, BatchDecision(0, None)),
        ("one fresh request waits out max wait", ((1.000, 10),), 1.002, BatchDecision(0, 1.010)),
        ("one request whose wait is up runs", ((1.000, 10),), 1.010, BatchDecision(1)),
        ("the oldest request sets the clock", ((1.000, 10), (1.008, 10)), 1.011, BatchDecision(2)),
        ("a full batch runs at once", ((1.0, 1), (1.0, 1), (1.0, 1), (1.0, 1)), 1.0, BatchDecision(4)),
        ("more than a batch takes only a batch", tuple((1.0, 1) for _ in range(6)), 1.0, BatchDecision(4)),
        ("the token budget stops the batch", ((1.0, 60), (1.0, 30), (1.0, 20)), 1.0, BatchDecision(2)),
        ("exactly the token budget is full", ((1.0, 60), (1.0, 40)), 1.0, BatchDecision(2)),
        ("an oversize request runs alone", ((1.0, 500), (1.0, 1)), 1.0, BatchDecision(1)),
        ("an oversize request alone runs at once", ((1.0, 500),), 1.0, BatchDecision(1)),
        (
            "under both budgets and fresh: wait",
            ((1.0, 10), (1.001, 10), (1.002, 10)),
            1.003,
            BatchDecision(0, 1.010),
        ),
    ],
)
def test_decide_batch_table(name, entries, now_s, expected):
    assert decide_batch(queue(*entries), LIMITS, now_s) == expected, name


def test_zero_max_wait_runs_whatever_is_queued():
    limits = BatchLimits(max_requests=8, max_tokens=1000, max_wait_s=0.0)
    assert decide_batch(queue((1.0, 5), (1.0, 5)), limits, 1.0) == BatchDecision(2)


@pytest.mark.parametrize(
    "limits",
    [
        {"max_requests": 0, "max_tokens": 1, "max_wait_s": 0},
        {"max_requests": 1, "max_tokens": 0, "max_wait_s": 0},
        {"max_requests": 1, "max_tokens": 1, "max_wait_s": -1},
    ],
)
def test_limits_refuse_nonsense(limits):
    with pytest.raises(ValueError):
        BatchLimits(**limits)


limits_strategy = st.builds(
    BatchLimits,
    max_requests=st.integers(1, 16),
    max_tokens=st.integers(1, 500),
    max_wait_s=st.floats(0, 0.1),
)
queue_strategy = st.lists(st.tuples(st.floats(0, 1), st.integers(1, 300)), min_size=0, max_size=40).map(
    lambda entries: [Queued(at, tokens) for at, tokens in sorted(entries)]
)


@settings(max_examples=300, deadline=None)
@given(limits=limits_strategy, entries=queue_strategy, now_s=st.floats(0, 2))
def test_a_batch_never_exceeds_its_budgets(limits, entries, now_s):
    decision = decide_batch(entries, limits, now_s)
    batch = entries[: decision.size]
    assert len(batch) <= limits.max_requests
    if len(batch) > 1:
        assert sum(entry.tokens for entry in batch) <= limits.max_tokens


@settings(max_examples=300, deadline=None)
@given(limits=limits_strategy, entries=queue_strategy, now_s=st.floats(0, 2))
def test_a_batch_is_a_fifo_prefix_that_cannot_grow_or_has_waited(limits, entries, now_s):
    decision = decide_batch(entries, limits, now_s)
    if not entries:
        assert decision == BatchDecision(0, None)
        return
    if decision.run_now:
        batch, rest = entries[: decision.size], entries[decision.size :]
        full = len(batch) == limits.max_requests or sum(e.tokens for e in batch) >= limits.max_tokens
        next_breaks_budget = bool(rest) and sum(e.tokens for e in batch) + rest[0].tokens > limits.max_tokens
        waited = now_s >= entries[0].enqueued_at_s + limits.max_wait_s
        assert full or next_breaks_budget or waited
        if not (full or next_breaks_budget):
            # Not forced by a budget: the batch took everything the budgets allow.
            assert not rest
    else:
        assert decision.wake_at_s is not None


@settings(max_examples=300, deadline=None)
@given(limits=limits_strategy, entries=queue_strategy.filter(bool), now_s=st.floats(0, 2))
def test_the_policy_waits_at_most_max_wait(limits, entries, now_s):
    decision = decide_batch(entries, limits, now_s)
    oldest_due_s = entries[0].enqueued_at_s + limits.max_wait_s
    if not decision.run_now:
        assert decision.wake_at_s is not None and decision.wake_at_s <= oldest_due_s
        assert now_s < oldest_due_s
    # Once the oldest request's wait is up, something always runs.
    assert decide_batch(entries, limits, max(now_s, oldest_due_s)).run_now


def test_token_estimates_grow_with_text():
    assert estimate_text_tokens("") == 2
    assert estimate_text_tokens("a" * 400) == 102
    encode = inference_pb2.EncodeRequest(
        items=[common_pb2.Item(text="a" * 40), common_pb2.Item(text="b" * 80)]
    )
    assert estimate_request_tokens("encode", encode) == 12 + 22
    encode.instruction = "q" * 8
    assert estimate_request_tokens("encode", encode) == 12 + 22 + 2 * 2
    score = inference_pb2.ScoreRequest(
        query=common_pb2.Item(text="q" * 40), items=[common_pb2.Item(text="d" * 40)] * 3
    )
    assert estimate_request_tokens("score", score) == 3 * (12 + 12)
    extract = inference_pb2.ExtractRequest(items=[common_pb2.Item(text="e" * 4)])
    assert estimate_request_tokens("extract", extract) == 3
