"""The one live server for tests: an in-process `Server` on a free loopback port, and our TS2021 client.

`LiveServer` serves HTTP (or HTTPS, given a certificate) on 127.0.0.1 and the local API on a unix socket, with
no metrics listener and no embedded DERP unless a test's config keys ask for them. Tests drive it as a client
would (`client`, `node`, `open_map`) and read or change state through `store`. The fixtures `live` (one
server with the defaults) and `start_live` (servers with the test's config keys) are in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp

from pyheadscale.app import Server
from pyheadscale.client.control import ControlClient, _Stream
from pyheadscale.config import Config, build_config
from pyheadscale.state.models import Node
from pyheadscale.state.store import Store
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.ports import free_port

KEEPALIVE = 1.0
"""Seconds between keep-alives on an idle map stream: short, so that what the server does at a keep-alive
(ending the stream of a node whose expiry passed unnoticed) happens within a test's wait."""


def server_config(
    data_dir: Path, socket_dir: Path | None = None, *, port: int | None = None, scheme: str = "http"
) -> dict[str, Any]:
    """The raw config of a loopback server on `port` (a free one by default).

    The local API's unix socket goes in `socket_dir`, a short directory (AF_UNIX paths are limited to ~100
    bytes); without one the server has none.
    """
    port = port or free_port()
    return {
        "server_url": f"{scheme}://127.0.0.1:{port}",
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": "",
        "unix_socket": str(socket_dir / "hs.sock") if socket_dir is not None else "",
        "derp": {"server": {"enabled": False}},
        "data_dir": str(data_dir),
    }


class ClientNode:
    """One node registered through our TS2021 client: its keys, its connection and its registration answer."""

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


def send_request_headers(
    client: ControlClient,
    *headers: tuple[str, str],
    path: str = "/machine/register",
    end_stream: bool = False,
) -> int:
    """Queue the HEADERS of a POST to `path` on the client's TS2021 connection, and nothing more: the start of
    a request a hostile client may never finish. `headers` follow the pseudo-headers; the caller sends any
    body (`client._h2.send_data`) and flushes. Returns the stream id."""
    h2conn: Any = client._h2
    stream_id = int(h2conn.get_next_available_stream_id())
    client._streams[stream_id] = _Stream()
    pseudo = [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "control")]
    h2conn.send_headers(stream_id, pseudo + list(headers), end_stream=end_stream)
    return stream_id


def open_map(node: ClientNode, **kwargs: Any) -> MapReader:
    """`node`'s streaming map poll, read in the background (`kwargs` go to `ControlClient.map_stream`)."""
    return MapReader(node.client.map_stream(node.node_key, **kwargs))


class LiveServer:
    """A server on `data_dir` (not yet started) and the clients a test opened against it (closed on stop).

    `extra` are config keys merged over `server_config`'s (e.g. `policy={"mode": "database"}`); `scheme`
    "https" goes with `tls_cert_path`/`tls_key_path` among them.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        keepalive: float = KEEPALIVE,
        port: int | None = None,
        scheme: str = "http",
        **extra: Any,
    ) -> None:
        self.data_dir = data_dir
        self.keepalive = keepalive
        self.socket_dir = Path(tempfile.mkdtemp(prefix="phs-"))
        self.raw = server_config(data_dir, self.socket_dir, port=port, scheme=scheme) | extra
        self.config: Config = build_config(self.raw, data_dir=data_dir)
        self.server = Server(self.config, keepalive=keepalive)
        self.clients: list[ControlClient] = []

    @property
    def url(self) -> str:
        return self.config.server_url

    @property
    def port(self) -> int:
        return int(str(self.raw["listen_addr"]).rsplit(":", 1)[1])

    @property
    def socket_path(self) -> str:
        return str(self.raw["unix_socket"])

    @property
    def grpc_address(self) -> str:
        """The remote gRPC API's host:port, when the config keys gave `grpc_listen_addr`."""
        return str(self.raw.get("grpc_listen_addr", ""))

    @property
    def store(self) -> Store:
        assert self.server.store is not None, "the server is not started"
        return self.server.store

    def record(self, node: ClientNode | str) -> Node:
        """The stored record of `node` (a client node or a node key's text); fails the test without one."""
        key = node.node_key_text if isinstance(node, ClientNode) else node
        record = self.store.node_by_node_key(key)
        assert record is not None, f"no node with key {key[:16]}..."
        return record

    async def start(self) -> LiveServer:
        try:
            await self.server.start()
        except BaseException:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            raise
        return self

    async def _stop_server(self) -> None:
        for client in self.clients:
            await client.close()
        self.clients.clear()
        await self.server.stop()

    async def stop(self) -> None:
        await self._stop_server()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    async def restart(self) -> None:
        """Stop, then start a new `Server` on the same config and data directory."""
        await self._stop_server()
        self.server = Server(self.config, keepalive=self.keepalive)
        await self.server.start()

    # ---- driving it as clients and operators do ----

    async def local_api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One call to the REST API on the unix socket, as the local CLI makes it: (status, decoded JSON).

        `path` is below /api/v1 (e.g. "/node/1"). What this answers is what operators and the CLI see, so
        tests that read state through it do not depend on how the store holds it.
        """
        connector = aiohttp.UnixConnector(path=self.socket_path)
        async with aiohttp.ClientSession(connector=connector) as session:
            data = None if body is None else json.dumps(body)
            async with session.request(method, f"http://localhost/api/v1{path}", data=data) as response:
                return response.status, await response.json(content_type=None)

    async def client(self, machine_key: MachinePrivate | None = None) -> ControlClient:
        """A connected TS2021 client (a new machine key unless one is given)."""
        client = ControlClient(self.url, machine_key or MachinePrivate.generate())
        await asyncio.wait_for(client.connect(), 5)
        self.clients.append(client)
        return client

    async def preauth_key(self, user_name: str = "alice", **kwargs: Any) -> str:
        """A new preauth key of `user_name` (made if missing), reusable unless `reusable=False` is given."""
        user = self.store.user_by_name(user_name) or await self.store.create_user(user_name)
        kwargs.setdefault("reusable", True)
        _, text = await self.store.create_preauth_key(user.id, **kwargs)
        return str(text)

    async def node(self, hostname: str = "node", *, auth_key: str | None = None, **kwargs: Any) -> ClientNode:
        """A new machine registered through the client (`kwargs` go to `ControlClient.register`)."""
        machine_key = MachinePrivate.generate()
        node_key = NodePrivate.generate()
        client = await self.client(machine_key)
        if auth_key is None:
            auth_key = await self.preauth_key()
        answer = await client.register(node_key, auth_key=auth_key, hostname=hostname, **kwargs)
        assert answer["MachineAuthorized"], answer
        return ClientNode(client, machine_key, node_key, answer)

    async def streaming_pair(self) -> tuple[ClientNode, ClientNode, MapReader, MapReader, int]:
        """Nodes "a" and "b", each with its map stream open and first full map read, and b's node id."""
        a, b = await self.node("a"), await self.node("b")
        ra, rb = open_map(a), open_map(b)
        await ra.next(), await rb.next()
        return a, b, ra, rb, self.record(b).id

    async def add_node(
        self,
        hostname: str,
        *,
        user_id: int | None = None,
        tags: Iterable[str] = (),
        routes: Iterable[str] = (),
    ) -> Node:
        """A node registered in the store as a preauth key registers one, announcing `routes` (no client)."""
        key, _text = await self.store.create_preauth_key(user_id, tags=tags)
        machine = MachinePrivate.generate()
        node_key = NodePrivate.generate()
        hostinfo = {"Hostname": hostname, "RoutableIPs": list(routes)}
        return await self.store.register_with_key(
            key,
            machine_key=machine.public().text,
            node_key=node_key.public().text,
            hostinfo=hostinfo,
            expiry=None,
        )


StartLive = Callable[..., Awaitable[LiveServer]]
"""The `start_live` fixture: `await start_live(**config_keys)` is a started `LiveServer`."""
