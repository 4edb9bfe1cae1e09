"""Servers with TLS on listen_addr, and the test CA their certificates chain to."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pyheadscale.app import Server
from pyheadscale.config import build_config
from tests.pki import ServerPKI, make_pki
from tests.ports import free_port


@pytest.fixture
def pki(tmp_path: Path) -> ServerPKI:
    return make_pki(tmp_path / "pki", ["localhost"], ["127.0.0.1"])


@pytest.fixture
def trust(pki: ServerPKI) -> ssl.SSLContext:
    """A client context that trusts only the test CA."""
    return ssl.create_default_context(cafile=str(pki.ca_cert))


def tls_raw_config(port: int, cert: Path, key: Path, **extra: Any) -> dict[str, Any]:
    return {
        "server_url": f"https://127.0.0.1:{port}",
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": "",
        "unix_socket": "",
        "derp": {"server": {"enabled": False}},
        "tls_cert_path": str(cert),
        "tls_key_path": str(key),
    } | extra


StartTLSServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start_tls_server(tmp_path: Path, pki: ServerPKI) -> AsyncIterator[StartTLSServer]:
    started: list[Server] = []

    async def start(**extra: Any) -> Server:
        raw = tls_raw_config(free_port(), pki.cert, pki.key, **extra)
        server = Server(build_config(raw, data_dir=tmp_path / "data"), keepalive=30.0)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()
