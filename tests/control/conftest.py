"""Fixtures for control-plane tests: an in-process Server on a free port and helpers to register nodes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pyheadscale.app import Server
from pyheadscale.client.control import ControlClient
from pyheadscale.config import Config, build_config
from tailkey import MachinePrivate, NodePrivate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_config(data_dir: Path, port: int, **extra: Any) -> Config:
    raw: dict[str, Any] = {
        "server_url": f"http://127.0.0.1:{port}",
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": "",
        "unix_socket": "",
        "derp": {"server": {"enabled": False}},
    }
    raw.update(extra)
    return build_config(raw, data_dir=data_dir)


class Node:
    """One registered test node: its keys, its connected client and its registration answer."""

    def __init__(
        self,
        client: ControlClient,
        machine_key: MachinePrivate,
        node_key: NodePrivate,
        register: dict[str, Any],
    ) -> None:
        self.client = client
        self.machine_key = machine_key
        self.node_key = node_key
        self.register = register

    @property
    def node_key_text(self) -> str:
        return self.node_key.public().text

    @property
    def machine_key_text(self) -> str:
        return self.machine_key.public().text


class Harness:
    """A running server plus the clients a test opened against it (all closed on stop)."""

    def __init__(
        self, data_dir: Path, *, keepalive: float = 1.0, port: int | None = None, **extra: Any
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.keepalive = keepalive
        self.config = make_config(data_dir, self.port, **extra)
        self.server = Server(self.config, keepalive=keepalive)
        self.clients: list[ControlClient] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store(self) -> Any:
        assert self.server.store is not None
        return self.server.store

    async def start(self) -> Harness:
        await self.server.start()
        return self

    async def stop(self) -> None:
        for client in self.clients:
            await client.close()
        self.clients.clear()
        await self.server.stop()

    async def restart(self) -> None:
        await self.stop()
        self.server = Server(self.config, keepalive=self.keepalive)
        await self.server.start()

    async def client(self, machine_key: MachinePrivate | None = None) -> ControlClient:
        client = ControlClient(self.url, machine_key or MachinePrivate.generate())
        await asyncio.wait_for(client.connect(), 5)
        self.clients.append(client)
        return client

    async def preauth_key(self, user_name: str = "alice", **kwargs: Any) -> str:
        user = self.store.user_by_name(user_name) or await self.store.create_user(user_name)
        kwargs.setdefault("reusable", True)
        _, text = await self.store.create_preauth_key(user.id, **kwargs)
        return str(text)

    async def streaming_pair(self) -> tuple[Node, Node, MapReader, MapReader, int]:
        """Nodes "a" and "b", each with its map stream open and first full map read, and b's node id."""
        a, b = await self.node("a"), await self.node("b")
        ra, rb = open_map(a), open_map(b)
        await ra.next(), await rb.next()
        return a, b, ra, rb, self.store.node_by_node_key(b.node_key_text).id

    async def node(self, hostname: str = "node", *, auth_key: str | None = None, **kwargs: Any) -> Node:
        machine_key = MachinePrivate.generate()
        node_key = NodePrivate.generate()
        client = await self.client(machine_key)
        if auth_key is None:
            auth_key = await self.preauth_key()
        answer = await client.register(node_key, auth_key=auth_key, hostname=hostname, **kwargs)
        assert answer["MachineAuthorized"], answer
        return Node(client, machine_key, node_key, answer)


@pytest.fixture
async def make_harness(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    started: list[Harness] = []

    async def make(**kwargs: Any) -> Harness:
        data_dir = kwargs.pop("data_dir", tmp_path / f"server{len(started)}")
        harness = Harness(data_dir, **kwargs)
        await harness.start()
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.stop()


@pytest.fixture
async def harness(make_harness: Callable[..., Awaitable[Harness]]) -> Harness:
    return await make_harness()


class MapReader:
    """Reads a map stream in the background so tests can wait for a message matching a predicate."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.messages: list[dict[str, Any]] = []
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            async for message in self._stream:
                self.messages.append(message)
                self._queue.put_nowait(message)
        finally:
            self._queue.put_nowait(None)

    async def next(self, within: float = 5.0) -> dict[str, Any]:
        message = await asyncio.wait_for(self._queue.get(), within)
        assert message is not None, "map stream ended"
        return message

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = 5.0
    ) -> dict[str, Any]:
        """The first later message for which predicate holds (fails after `within` seconds)."""

        async def scan() -> dict[str, Any]:
            while True:
                message = await self._queue.get()
                assert message is not None, "map stream ended"
                if predicate(message):
                    return message

        return await asyncio.wait_for(scan(), within)

    async def ended(self, within: float = 5.0) -> bool:
        """True once the stream ends (drains messages until then)."""

        async def drain() -> None:
            while await self._queue.get() is not None:
                pass

        await asyncio.wait_for(drain(), within)
        return True

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass
        await self._stream.aclose()


def open_map(node: Node, **kwargs: Any) -> MapReader:
    return MapReader(node.client.map_stream(node.node_key, **kwargs))
