"""DERP over TLS with a certificate from files, trusted through a private CA."""

from __future__ import annotations

import contextlib
import os
import ssl

import aiohttp
import pytest

from derp import frames
from derp.client import DerpClient
from derp.server import DerpServer
from tests.derp.harness import eventually, serving, within
from tests.pki import ServerPKI, make_pki

MESH_KEY = "3c" * 32


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ServerPKI:
    return make_pki(tmp_path_factory.mktemp("pki"), ["localhost"], ["127.0.0.1"])


async def recv_packet(client: DerpClient) -> frames.ReceivedPacket:
    while True:
        message = await within(client.recv())
        if isinstance(message, frames.ReceivedPacket):
            return message


@pytest.mark.parametrize("websocket", [False, True], ids=["upgrade", "websocket"])
async def test_relay_over_tls(pki: ServerPKI, websocket: bool) -> None:
    server = DerpServer(os.urandom(32))
    async with serving(server, tls=pki.server_context()) as url:
        assert url.startswith("https://")
        a = await DerpClient.connect(url, ssl=pki.client_context(), websocket=websocket)
        b = await DerpClient.connect(url, ssl=pki.client_context(), websocket=websocket)
        try:
            await a.send(b.public_key, b"encrypted twice")
            assert await recv_packet(b) == frames.ReceivedPacket(a.public_key, b"encrypted twice")
        finally:
            await a.close()
            await b.close()


async def test_untrusted_certificate_is_refused(pki: ServerPKI) -> None:
    server = DerpServer(os.urandom(32))
    async with serving(server, tls=pki.server_context()) as url:
        with pytest.raises(ssl.SSLCertVerificationError):
            await within(DerpClient.connect(url, ssl=ssl.create_default_context()))
        assert server.connection_count() == 0


async def test_plain_http_to_tls_port_leaves_it_serving(pki: ServerPKI) -> None:
    server = DerpServer(os.urandom(32))
    async with serving(server, tls=pki.server_context()) as url:
        plain = url.replace("https://", "http://")
        async with aiohttp.ClientSession() as session:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(plain.removesuffix("/derp") + "/generate_204") as response:
                    assert response.status != 204
        client = await DerpClient.connect(url, ssl=pki.client_context())
        await client.close()


async def test_mesh_over_tls(pki: ServerPKI) -> None:
    servers = [DerpServer(os.urandom(32), mesh_key=MESH_KEY) for _ in range(2)]
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serving(s, tls=pki.server_context())) for s in servers]
        for server in servers:
            await server.start_mesh(urls, ssl=pki.client_context())
        a = await DerpClient.connect(urls[0], ssl=pki.client_context())
        b = await DerpClient.connect(urls[1], ssl=pki.client_context())
        try:
            await eventually(lambda: b.public_key in servers[0].remote_client_keys())
            await a.send(b.public_key, b"meshed over tls")
            assert await recv_packet(b) == frames.ReceivedPacket(a.public_key, b"meshed over tls")
        finally:
            await a.close()
            await b.close()
