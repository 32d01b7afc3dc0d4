"""Fixtures shared by every test layer.

Keep this small: a fixture belongs here only when tests of more than one
package need it. Tests poll with a deadline (`assert_eventually`) instead of
sleeping fixed amounts.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

Probe = Callable[[], Any | Awaitable[Any]]


async def _assert_eventually(probe: Probe, *, timeout_s: float = 5.0, interval_s: float = 0.01) -> Any:
    """Await until `probe()` returns a truthy value or stops raising AssertionError.

    Returns the probe's last (truthy) value. Past the deadline the last
    assertion is re-raised, or a falsy result fails, so the test report shows
    what never became true.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            if value or value is None:
                # None: the probe asserted rather than returned.
                return value
            failure: AssertionError = AssertionError(f"probe stayed falsy: {value!r}")
        except AssertionError as error:
            failure = error
        if time.monotonic() >= deadline:
            raise failure
        await asyncio.sleep(interval_s)


@pytest.fixture
def assert_eventually() -> Callable[..., Awaitable[Any]]:
    """`await assert_eventually(probe, timeout_s=5.0)`: poll until the probe holds."""
    return _assert_eventually


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (prefer binding port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
