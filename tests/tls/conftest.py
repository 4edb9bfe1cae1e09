"""Servers with TLS on listen_addr, and the test CA their certificates chain to."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from tests.live_server import LiveServer, StartLive, server_config
from tests.pki import ServerPKI, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> ServerPKI:
    return make_pki(tmp_path / "pki", ["localhost"], ["127.0.0.1"])


@pytest.fixture
def trust(pki: ServerPKI) -> ssl.SSLContext:
    """A client context that trusts only the test CA."""
    return ssl.create_default_context(cafile=str(pki.ca_cert))


def tls_raw_config(data_dir: Path, port: int, cert: Path, key: Path, **extra: Any) -> dict[str, Any]:
    """A loopback server's raw config with HTTPS on `port`, for a test that builds its `Server` itself."""
    return (
        server_config(data_dir, port=port, scheme="https")
        | {"tls_cert_path": str(cert), "tls_key_path": str(key)}
        | extra
    )


@pytest.fixture
def start_tls_server(start_live: StartLive, pki: ServerPKI, tmp_path: Path) -> StartLive:
    """`start_live` serving HTTPS with the test CA's certificate (all on one data directory)."""

    async def start(**extra: Any) -> LiveServer:
        return await start_live(
            data_dir=tmp_path / "data",
            scheme="https",
            tls_cert_path=str(pki.cert),
            tls_key_path=str(pki.key),
            **extra,
        )

    return start
