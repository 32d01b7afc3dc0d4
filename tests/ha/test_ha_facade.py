"""`mesh facade --etcd` as a real process: it follows the router replicas registered in etcd."""

from __future__ import annotations

import signal

import aiohttp
import pytest

from tests.ha.conftest import LEASE_TTL_S, PREFIX

pytestmark = [pytest.mark.etcd, pytest.mark.system, pytest.mark.timeout(90)]


async def test_the_facade_follows_replicas_in_etcd(mesh, free_port, assert_eventually):
    r1 = mesh.router("r1")
    facade = mesh.group.start(
        "facade",
        [
            "facade",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port),
            "--etcd",
            mesh.etcd.client_url,
            "--etcd-prefix",
            PREFIX,
        ],
        env={"SIE_AUTH_TOKEN": "", "SIE_ADMIN_TOKEN": ""},
    )
    base = f"http://127.0.0.1:{free_port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def readyz() -> int:
            assert facade.alive(), mesh.logs()
            try:
                async with session.get(f"{base}/readyz") as reply:
                    return reply.status
            except aiohttp.ClientConnectionError:
                return 0

        async def answering_routers(calls: int = 6) -> set[str]:
            """router_id of whichever replica answered each GET /health."""
            answered = set()
            for _ in range(calls):
                async with session.get(f"{base}/health") as reply:
                    assert reply.status == 200, await reply.text()
                    answered.add((await reply.json())["router_id"])
            return answered

        async def ready() -> None:
            assert await readyz() == 200, mesh.logs()

        await assert_eventually(ready, timeout_s=30, interval_s=0.05)
        assert await answering_routers() == {"r1"}

        # A replica that registers later takes requests too.
        r2 = mesh.router("r2")

        async def both_answer() -> None:
            assert await answering_routers() == {"r1", "r2"}, mesh.logs()

        await assert_eventually(both_answer, timeout_s=30, interval_s=0.1)

        # r1 drains: its lease is revoked, it leaves the set, and r2 answers alone.
        r1.signal(signal.SIGTERM)

        async def only_r2() -> None:
            assert await answering_routers() == {"r2"}, mesh.logs()

        await assert_eventually(only_r2, timeout_s=30, interval_s=0.1)

        # The last replica dies without a word: not ready once its health checks fail
        # (its etcd key outlives it by up to the lease TTL; readiness does not wait for that).
        r2.signal(signal.SIGKILL)

        async def unready() -> None:
            assert await readyz() == 503

        await assert_eventually(unready, timeout_s=LEASE_TTL_S + 10, interval_s=0.1)
        assert "Traceback" not in facade.log(), facade.log()
