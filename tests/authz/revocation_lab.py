"""What the real-client revocation drivers (logout_driver.py, revoke_driver.py) share: pyheadscale on loopback
with its embedded relay, and the watch that a revoked node stays off it."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from derp.server import DerpServer
from pyheadscale.config import Config, build_config
from pyheadscale.state.store import Store
from pyheadscale.tailkey import NodePublic
from tests.ports import free_port


def loopback_config(workdir: Path) -> tuple[Config, str]:
    """(config, server URL): pyheadscale on 127.0.0.1 with its embedded DERP relay and STUN."""
    port, stun_port = free_port(), free_port(socket.SOCK_DGRAM)
    url = f"http://127.0.0.1:{port}"
    config = build_config(
        {
            "server_url": url,
            "listen_addr": f"127.0.0.1:{port}",
            "metrics_listen_addr": "",
            "derp": {"server": {"enabled": True, "stun_listen_addr": f"127.0.0.1:{stun_port}"}},
        },
        data_dir=workdir / "server",
    )
    return config, url


async def comes_back(
    store: Store, derp: DerpServer, node_id: int, node_key: NodePublic, seconds: float
) -> list[str]:
    """Where the node showed up again within `seconds` ("relay", "map stream"), sampled every 0.1 s."""
    back: list[str] = []
    watch_until = time.monotonic() + seconds
    while time.monotonic() < watch_until:
        if derp.is_client_connected(node_key):
            back.append("relay")
        if store.is_online(node_id):
            back.append("map stream")
        await asyncio.sleep(0.1)
    return sorted(set(back))
