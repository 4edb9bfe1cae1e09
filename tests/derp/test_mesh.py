"""Meshed DERP servers forwarding packets for each other's clients."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator

import pytest

from derp import frames
from derp.client import DerpClient
from derp.frames import PeerGoneReason, PeerPresentFlags
from derp.mesh import MeshLink
from derp.server import DerpServer
from pyheadscale.tailkey import DerpMeshKey
from tests.derp.harness import eventually, serving, within

MESH_KEY = "5a" * 32


async def recv_type(client: DerpClient, kind: type) -> frames.ServerMessage:
    while True:
        message = await within(client.recv())
        if isinstance(message, kind):
            return message


def _link_up(link: MeshLink) -> bool:
    return link.connected.is_set() or link.self_connect


def _reaches_all(server: DerpServer, keys: set[bytes]) -> bool:
    """Whether ``server`` has every one of ``keys`` as a local or a mesh-forwarded client."""
    return server.client_keys() | server.remote_client_keys() >= keys


@contextlib.asynccontextmanager
async def meshed_region(count: int) -> AsyncIterator[list[tuple[DerpServer, str]]]:
    """``count`` servers sharing a mesh key, each meshing with every URL (itself included)."""
    servers = [DerpServer(os.urandom(32), mesh_key=MESH_KEY) for _ in range(count)]
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serving(s)) for s in servers]
        for server in servers:
            await server.start_mesh(urls)
        for server in servers:
            for link in server.mesh_links:
                await eventually(functools.partial(_link_up, link))
        yield list(zip(servers, urls, strict=True))


async def test_clients_on_different_servers_reach_each_other() -> None:
    async with meshed_region(2) as [(s1, url1), (s2, url2)]:
        a = await DerpClient.connect(url1)
        b = await DerpClient.connect(url2)
        try:
            await eventually(lambda: b.public_key in s1.remote_client_keys())
            await eventually(lambda: a.public_key in s2.remote_client_keys())
            await a.send(b.public_key, b"across the mesh")
            message = await recv_type(b, frames.ReceivedPacket)
            assert message == frames.ReceivedPacket(a.public_key, b"across the mesh")
            await b.send(a.public_key, b"and back")
            assert await recv_type(a, frames.ReceivedPacket) == frames.ReceivedPacket(
                b.public_key, b"and back"
            )
            assert s1.stats()["packets_forwarded_out"] == 1
            assert s2.stats()["packets_forwarded_in"] == 1

            # When b leaves its server, a (which heard from b) learns b is gone from the region.
            await b.close()
            gone = await recv_type(a, frames.PeerGone)
            assert gone == frames.PeerGone(b.public_key, PeerGoneReason.DISCONNECTED)
            await eventually(lambda: b.public_key not in s1.remote_client_keys())
        finally:
            await a.close()
            await b.close()


async def test_region_with_three_servers() -> None:
    async with meshed_region(3) as region:
        clients = [await DerpClient.connect(url) for _, url in region]
        try:
            for server, _ in region:
                await eventually(functools.partial(_reaches_all, server, {c.public_key for c in clients}))
            for sender in clients:
                for receiver in clients:
                    if sender is not receiver:
                        await sender.send(receiver.public_key, sender.public_key[:4])
                        message = await recv_type(receiver, frames.ReceivedPacket)
                        assert message == frames.ReceivedPacket(sender.public_key, sender.public_key[:4])
        finally:
            for client in clients:
                await client.close()


async def test_self_in_mesh_list_is_ignored(server: DerpServer) -> None:
    meshing = DerpServer(os.urandom(32), mesh_key=MESH_KEY)
    async with serving(meshing) as url:
        await meshing.start_mesh([url])
        [link] = meshing.mesh_links
        await eventually(lambda: link.self_connect)
        assert meshing.stats()["watchers"] == 0


async def test_watcher_sees_present_and_gone() -> None:
    server = DerpServer(os.urandom(32), mesh_key=MESH_KEY)
    async with serving(server) as url:
        early = await DerpClient.connect(url)
        watcher = await DerpClient.connect(url, mesh_key=MESH_KEY)
        await watcher.watch_conns()
        try:
            # The initial flood lists everyone connected, the watcher included.
            seen: set[bytes] = set()
            while seen != {early.public_key, watcher.public_key}:
                present = await recv_type(watcher, frames.PeerPresent)
                assert isinstance(present, frames.PeerPresent)
                seen.add(present.peer)
            late = await DerpClient.connect(url)
            present = await recv_type(watcher, frames.PeerPresent)
            assert present == frames.PeerPresent(
                late.public_key, late_endpoint(server, late), PeerPresentFlags.IS_REGULAR
            )
            await late.close()
            gone = await recv_type(watcher, frames.PeerGone)
            assert gone == frames.PeerGone(late.public_key, PeerGoneReason.DISCONNECTED)
        finally:
            await early.close()
            await watcher.close()


def late_endpoint(server: DerpServer, client: DerpClient) -> tuple[str, int] | None:
    return server._clients[client.public_key].active.remote_addr


async def test_mesh_peer_can_forward_and_close_peers() -> None:
    server = DerpServer(os.urandom(32), mesh_key=MESH_KEY)
    async with serving(server) as url:
        peer = await DerpClient.connect(url, mesh_key=DerpMeshKey(bytes.fromhex(MESH_KEY)))
        target = await DerpClient.connect(url)
        try:
            remote_source = os.urandom(32)
            await peer.forward_packet(remote_source, target.public_key, b"forwarded")
            message = await recv_type(target, frames.ReceivedPacket)
            assert message == frames.ReceivedPacket(remote_source, b"forwarded")
            await peer.close_peer(target.public_key)
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                await recv_type(target, frames.Pong)
            await eventually(lambda: not server.is_client_connected(target.public_key))
        finally:
            await peer.close()
            await target.close()


@pytest.mark.parametrize("action", ["watch", "forward"])
async def test_wrong_mesh_key_is_refused(action: str) -> None:
    server = DerpServer(os.urandom(32), mesh_key=MESH_KEY)
    async with serving(server) as url:
        impostor = await DerpClient.connect(url, mesh_key="a5" * 32)
        try:
            if action == "watch":
                await impostor.watch_conns()
            else:
                await impostor.forward_packet(os.urandom(32), os.urandom(32), b"x")
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                await recv_type(impostor, frames.Pong)
            assert server.stats()["watchers"] == 0
        finally:
            await impostor.close()


async def test_mesh_link_with_wrong_key_learns_nothing() -> None:
    home = DerpServer(os.urandom(32), mesh_key=MESH_KEY)
    stranger = DerpServer(os.urandom(32), mesh_key="a5" * 32)
    async with serving(home) as home_url, serving(stranger):
        resident = await DerpClient.connect(home_url)
        try:
            await stranger.start_mesh([home_url])
            [link] = stranger.mesh_links
            # The link logs in as an ordinary client, asks to watch, and is cut off.
            await eventually(lambda: link.last_error is not None)
            assert link.last_error is not None and link.last_error.startswith("link lost")
            assert home.stats()["watchers"] == 0
            assert stranger.remote_client_keys() == set()
            assert not link.connected.is_set()
        finally:
            await resident.close()
            await stranger.close()


async def test_start_mesh_requires_a_mesh_key(server: DerpServer) -> None:
    with pytest.raises(ValueError):
        await server.start_mesh(["http://127.0.0.1:1/derp"])
