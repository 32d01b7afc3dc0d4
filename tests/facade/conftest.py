"""Facade tests: the real app on aiohttp's test server, over http_facade.testing.FakeMesh."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from http_facade import FacadeConfig, create_app
from http_facade.testing import FakeMesh

ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def mesh() -> FakeMesh:
    return FakeMesh()


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """make_client(mesh, config=FacadeConfig()) -> a TestClient on a running app."""
    clients: list[TestClient] = []

    async def make(mesh: FakeMesh, config: FacadeConfig | None = None) -> TestClient:
        client = TestClient(TestServer(create_app(mesh, config or FacadeConfig())))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(mesh: FakeMesh, make_client: ClientFactory) -> TestClient:
    return await make_client(mesh)
