"""A live server with its remote gRPC API on a free loopback port (plaintext: grpc_allow_insecure)."""

from __future__ import annotations

import pytest

from tests.live_server import LiveServer, StartLive
from tests.ports import free_port


@pytest.fixture
async def grpc_live(start_live: StartLive) -> LiveServer:
    """`grpc_live.grpc_address` is the remote API; the unix socket serves the trusted local one."""
    return await start_live(grpc_listen_addr=f"127.0.0.1:{free_port()}", grpc_allow_insecure=True)
