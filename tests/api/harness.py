"""A live server for API and CLI tests: TCP listener on a free loopback port plus the unix socket."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pyheadscale.app import Server
from pyheadscale.config import build_config
from pyheadscale.state.models import Node
from pyheadscale.state.store import Store
from tailkey import MachinePrivate, NodePrivate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_config(data_dir: Path, socket_dir: Path) -> dict[str, Any]:
    """The raw config: the socket lives in a short directory (AF_UNIX paths are limited to ~100 bytes)."""
    port = free_port()
    return {
        "server_url": f"http://127.0.0.1:{port}",
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": "",
        "unix_socket": str(socket_dir / "hs.sock"),
        "derp": {"server": {"enabled": False}},
        "data_dir": str(data_dir),
    }


class LiveServer:
    """A started `Server` and where to reach it."""

    def __init__(self, server: Server, raw: dict[str, Any], socket_dir: Path) -> None:
        self.server = server
        self.raw = raw
        self.socket_dir = socket_dir

    @property
    def store(self) -> Store:
        assert self.server.store is not None
        return self.server.store

    @property
    def base_url(self) -> str:
        return str(self.raw["server_url"])

    @property
    def socket_path(self) -> str:
        return str(self.raw["unix_socket"])

    @classmethod
    async def start(cls, data_dir: Path, **extra: Any) -> LiveServer:
        """`extra`: config keys merged over the defaults (e.g. `policy={"mode": "database"}`)."""
        socket_dir = Path(tempfile.mkdtemp(prefix="phs-"))
        raw = server_config(data_dir, socket_dir) | extra
        server = Server(build_config(raw, data_dir=data_dir), keepalive=30.0)
        await server.start()
        return cls(server, raw, socket_dir)

    async def stop(self) -> None:
        await self.server.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    async def add_node(
        self,
        hostname: str,
        *,
        user_id: int | None = None,
        tags: Iterable[str] = (),
        routes: Iterable[str] = (),
    ) -> Node:
        """Register a node the way a client with a preauth key would, announcing `routes`."""
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
