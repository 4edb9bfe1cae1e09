"""Client verification: a callback and derper's admission-URL protocol."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from derp import frames
from derp.client import DerpClient
from derp.server import DerpServer
from pyheadscale.tailkey import NodePrivate, NodePublic
from tests.derp.harness import loopback_socket, serving, within

MESH_KEY = "11" * 32


async def test_callback_admits_known_and_rejects_unknown_keys() -> None:
    known = NodePrivate.generate()
    asked: list[NodePublic] = []

    async def verify(node_key: NodePublic) -> bool:
        asked.append(node_key)
        return node_key == known.public()

    server = DerpServer(os.urandom(32), verify_client=verify)
    async with serving(server) as url:
        with pytest.raises((ConnectionError, frames.ProtocolError, EOFError)):
            await within(DerpClient.connect(url))
        assert server.connection_count() == 0
        client = await DerpClient.connect(url, known)
        try:
            assert server.is_client_connected(client.public_key)
        finally:
            await client.close()
    assert asked[-1] == known.public()
    assert len(asked) == 2


async def test_callback_that_raises_rejects() -> None:
    async def broken(node_key: NodePublic) -> bool:
        raise RuntimeError("control server down")

    server = DerpServer(os.urandom(32), verify_client=broken)
    async with serving(server) as url:
        with pytest.raises((ConnectionError, frames.ProtocolError, EOFError)):
            await within(DerpClient.connect(url))


async def test_mesh_peers_skip_verification() -> None:
    async def deny_all(node_key: NodePublic) -> bool:
        return False

    server = DerpServer(os.urandom(32), mesh_key=MESH_KEY, verify_client=deny_all)
    async with serving(server) as url:
        peer = await DerpClient.connect(url, mesh_key=MESH_KEY)
        try:
            assert server.is_client_connected(peer.public_key)
        finally:
            await peer.close()


@contextlib.asynccontextmanager
async def admission_endpoint(allowed: set[bytes], seen: list[Any]) -> AsyncIterator[str]:
    async def admit(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        node_key = NodePublic.from_text(body["NodePublic"])
        return web.json_response({"Allow": node_key in allowed})

    app = web.Application()
    app.router.add_post("/verify", admit)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = loopback_socket()
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/verify"
    finally:
        await runner.cleanup()


async def test_admission_url_protocol() -> None:
    known = NodePrivate.generate()
    seen: list[Any] = []
    async with admission_endpoint({known.public()}, seen) as verify_url:
        server = DerpServer(os.urandom(32), verify_client_url=verify_url)
        async with serving(server) as url:
            client = await DerpClient.connect(url, known)
            await client.close()
            with pytest.raises((ConnectionError, frames.ProtocolError, EOFError)):
                await within(DerpClient.connect(url))
    assert seen[0] == {
        "NodePublic": known.public().text,
        "Source": "127.0.0.1",
    }
    assert len(seen) == 2


@pytest.mark.parametrize("fail_open", [True, False])
async def test_unreachable_admission_url_fails_open_or_closed(fail_open: bool) -> None:
    sock = loopback_socket()
    dead_url = f"http://127.0.0.1:{sock.getsockname()[1]}/verify"
    sock.close()  # nothing listens there now: connections are refused
    server = DerpServer(os.urandom(32), verify_client_url=dead_url, verify_client_url_fail_open=fail_open)
    async with serving(server) as url:
        if fail_open:
            client = await DerpClient.connect(url)
            assert server.is_client_connected(client.public_key)
            await client.close()
        else:
            with pytest.raises((ConnectionError, frames.ProtocolError, EOFError)):
                await within(DerpClient.connect(url))
