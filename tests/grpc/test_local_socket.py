"""The unix socket answers REST (HTTP/1.1) and gRPC (HTTP/2) alike, with no API key (its mode guards it)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from grpc import aio

from pyheadscale.grpc import local
from pyheadscale.grpc.schema import pb, services
from tests.live_server import LiveServer


async def test_rest_and_grpc_on_one_socket(grpc_live: LiveServer) -> None:
    await grpc_live.store.create_user("alice")
    connector = aiohttp.UnixConnector(path=grpc_live.socket_path)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get("http://localhost/api/v1/user") as resp:
            assert resp.status == 200 and (await resp.json())["users"][0]["name"] == "alice"
    async with aio.insecure_channel(f"unix:{grpc_live.socket_path}") as channel:
        stub: Any = services.HeadscaleServiceStub(channel)
        users = await stub.ListUsers(pb.ListUsersRequest())
        assert [u.name for u in users.users] == ["alice"]
        await stub.CreateUser(pb.CreateUserRequest(name="bob"))
    assert grpc_live.store.user_by_name("bob") is not None
    entries = grpc_live.store.audit.query(action="user.create", target=None, limit=10)
    assert entries[-1]["actor"] == "cli:unix-socket"


async def test_silent_and_closed_connections_do_not_disturb_it(grpc_live: LiveServer) -> None:
    _reader, silent = await asyncio.open_unix_connection(grpc_live.socket_path)
    _reader2, closed = await asyncio.open_unix_connection(grpc_live.socket_path)
    closed.close()
    partial_reader, partial = await asyncio.open_unix_connection(grpc_live.socket_path)
    partial.write(b"G")
    await partial.drain()
    await asyncio.sleep(0.3)
    partial.write(b"ET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    await partial.drain()
    assert (await asyncio.wait_for(partial_reader.readline(), 10)).startswith(b"HTTP/1.1 200")
    connector = aiohttp.UnixConnector(path=grpc_live.socket_path)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get("http://localhost/api/v1/health") as resp:
            assert resp.status == 200 and await resp.json() == {"databaseConnectivity": True}
    silent.close()
    partial.close()


async def test_connections_past_the_cap_are_closed(
    grpc_live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "MAX_CONNECTIONS", 2)
    held = [await asyncio.open_unix_connection(grpc_live.socket_path) for _ in range(2)]
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_unix_connection(grpc_live.socket_path)
    assert await asyncio.wait_for(reader.read(1), 10) == b"", "refused: closed at once"
    writer.close()
    for _reader, held_writer in held:
        held_writer.close()
