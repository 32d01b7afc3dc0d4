"""The dispatcher's two guards that run on every request: the retry budget,
which keeps retries from multiplying load in an outage, and the deadline
slots, which end a task whose worker never answers."""

from __future__ import annotations

import asyncio

import pytest

from mesh.clock import ManualClock
from mesh.dispatch import DeadlineSlots, DispatchPolicy, RetryBudget, _DeadlinePassed

POLICY = DispatchPolicy(retry_budget_ratio=0.2, retry_budget_min_per_s=1.0, retry_budget_window_s=10.0)


def spend_all(budget: RetryBudget) -> int:
    spent = 0
    while budget.try_spend():
        spent += 1
        assert spent < 10_000, "the budget never ran out"
    return spent


def test_an_idle_router_may_retry_at_the_floor_rate_only() -> None:
    budget = RetryBudget(POLICY, ManualClock())
    assert spend_all(budget) == 10  # 1 a second over a 10 s window


def test_retries_grow_with_requests_and_fall_back_when_they_leave_the_window() -> None:
    clock = ManualClock()
    budget = RetryBudget(POLICY, clock)
    for _ in range(5):
        for _ in range(100):
            budget.record_request()
        clock.advance(1.0)
    assert spend_all(budget) == 10 + 0.2 * 500

    # Retries spent stay spent while they are in the window, whatever arrives.
    for _ in range(50):
        budget.record_request()
    assert spend_all(budget) == 10  # 0.2 * 50 more

    # Ten seconds on, the requests and retries have all left the window.
    clock.advance(10.0)
    assert spend_all(budget) == 10


async def test_a_deadline_fails_its_future_after_it_passes_and_not_before() -> None:
    loop = asyncio.get_running_loop()
    slots = DeadlineSlots(resolution_s=0.005)
    soon, later = loop.create_future(), loop.create_future()
    due = loop.time() + 0.05
    slots.arm(loop, soon, due)
    slots.arm(loop, later, loop.time() + 60.0)
    assert len(slots) == 2
    with pytest.raises(_DeadlinePassed):
        await soon
    assert loop.time() >= due
    assert not later.done() and len(slots) == 1


async def test_an_answered_task_leaves_its_slot() -> None:
    loop = asyncio.get_running_loop()
    slots = DeadlineSlots(resolution_s=0.005)
    answered = loop.create_future()
    slot = slots.arm(loop, answered, loop.time() + 0.02)
    answered.set_result("done")
    slot.discard(answered)
    assert len(slots) == 0
    await asyncio.sleep(0.05)  # the slot's timer fires on an empty slot
    assert answered.result() == "done"
