"""A live server on a free loopback port, and our own TS2021 client to drive it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pyheadscale.app import Server
from pyheadscale.config import build_config
from tests.ports import free_port

StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """Start servers on `tmp_path` (extra config keys merged in); all are stopped at the end."""
    started: list[Server] = []

    async def start(**extra: Any) -> Server:
        port = free_port()
        raw = {
            "server_url": f"http://127.0.0.1:{port}",
            "listen_addr": f"127.0.0.1:{port}",
            "metrics_listen_addr": "",
            "unix_socket": "",
            "derp": {"server": {"enabled": False}},
        } | extra
        server = Server(build_config(raw, data_dir=tmp_path), keepalive=30.0)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()
