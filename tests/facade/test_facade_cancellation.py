"""A client that leaves cancels its mesh call; the request timeout is the mesh call's deadline."""

from __future__ import annotations

import asyncio

import aiohttp

from http_facade import FacadeConfig, create_app, start_http_server
from http_facade.testing import ENCODE_MODEL, FakeMesh


async def test_client_disconnect_cancels_the_mesh_call(make_client, assert_eventually):
    mesh = FakeMesh(hang=True, started=asyncio.Event())
    client = await make_client(mesh)
    request = asyncio.create_task(client.post(f"/v1/encode/{ENCODE_MODEL}", json={"items": [{"text": "x"}]}))
    await asyncio.wait_for(mesh.started.wait(), timeout=5)
    assert mesh.cancelled == []

    request.cancel()  # the client gives up: its connection closes

    await assert_eventually(lambda: len(mesh.cancelled) == 1)
    assert mesh.cancelled[0] is mesh.calls[0]


async def test_start_http_server_enables_cancellation_on_disconnect(assert_eventually):
    mesh = FakeMesh(hang=True, started=asyncio.Event())
    runner = await start_http_server(create_app(mesh), "127.0.0.1", 0)
    try:
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(
                session.post(
                    f"http://{host}:{port}/v1/score/{ENCODE_MODEL}",
                    json={"query": {"text": "q"}, "items": [{"text": "x"}]},
                )
            )
            await asyncio.wait_for(mesh.started.wait(), timeout=5)
            request.cancel()
            await assert_eventually(lambda: len(mesh.cancelled) == 1)
    finally:
        await runner.cleanup()


async def test_the_request_timeout_bounds_the_mesh_call_and_answers_504(make_client):
    mesh = FakeMesh(hang=True)
    client = await make_client(mesh, FacadeConfig(request_timeout_s=0.05))
    reply = await asyncio.wait_for(
        client.post(f"/v1/encode/{ENCODE_MODEL}", json={"items": [{"text": "x"}]}), timeout=10
    )
    assert reply.status == 504
    assert reply.headers["X-SIE-Error-Code"] == "DEADLINE_EXCEEDED"
    # The facade keeps no timer of its own: the mesh holds the call to the deadline it is given.
    assert [call.timeout_s for call in mesh.timed_out] == [0.05]
    assert mesh.cancelled == []
