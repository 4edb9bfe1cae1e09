"""A live server with its remote gRPC API on a free loopback port (plaintext: grpc_allow_insecure)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyheadscale.app import Server
from pyheadscale.config import build_config
from pyheadscale.state.store import Store
from tests.api.harness import server_config
from tests.ports import free_port


@dataclass
class GrpcLive:
    server: Server
    grpc_address: str
    socket_path: str
    base_url: str

    @property
    def store(self) -> Store:
        assert self.server.store is not None
        return self.server.store


@pytest.fixture
async def grpc_live(tmp_path: Path) -> AsyncIterator[GrpcLive]:
    socket_dir = Path(tempfile.mkdtemp(prefix="phs-"))
    raw = server_config(tmp_path, socket_dir)
    address = f"127.0.0.1:{free_port()}"
    raw.update(grpc_listen_addr=address, grpc_allow_insecure=True)
    server = Server(build_config(raw, data_dir=tmp_path), keepalive=30.0)
    await server.start()
    try:
        yield GrpcLive(server, address, str(raw["unix_socket"]), str(raw["server_url"]))
    finally:
        await server.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)
