"""Two real tsnet nodes through the embedded relay; node B's key is expired while it is fetching from node A.

usage: revoke_driver.py [WORKDIR]

Both nodes run with TS_DEBUG_ALWAYS_USE_DERP=1, so every packet between them crosses pyheadscale's embedded
relay. Once B has fetched A's file, the operator expires B (`nodes expire`). Then B's map stream must end,
its relay connection must close and stay closed (its client keeps trying to reconnect), and B must no longer
reach A. Runs inside a private namespace (see tests/e2e/netns.py) and prints one JSON line: what happened
and how long each took after the expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable by hand, without PYTHONPATH

from pyheadscale.app import Server
from pyheadscale.tailkey import NodePublic
from tests.authz.revocation_lab import comes_back, loopback_config
from tests.e2e.caddynode import CaddyNode, proxy_site, stop_nodes
from tests.e2e.netns import setup_loopback_only
from tests.e2e.twonode_driver import http_get, wait_until
from tests.ports import free_port

PAYLOAD_SIZE = 64 * 1024


async def fetch(port: int, payload: bytes) -> bool:
    with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
        status, body = await http_get(port, "/payload.bin")
        return status == 200 and body == payload
    return False


async def main(workdir: Path) -> dict[str, Any]:
    setup_loopback_only()
    config, url = loopback_config(workdir)
    proxy_port = free_port()
    result: dict[str, Any] = {"ok": False}
    server = Server(config)
    nodes: list[CaddyNode] = []
    await server.start()
    try:
        store, derp = server.store, server.derp
        assert store is not None and derp is not None
        user = await store.create_user("alice")
        _, key = await store.create_preauth_key(user.id, reusable=True)
        env = {"TS_DEBUG_ALWAYS_USE_DERP": "1"}
        site = workdir / "site"
        site.mkdir(exist_ok=True)
        payload = os.urandom(PAYLOAD_SIZE)
        (site / "payload.bin").write_bytes(payload)
        a_site = f":80 {{\n  bind tailscale/nodea\n  root * {site}\n  file_server\n}}\n"
        nodes.append(CaddyNode(workdir, "nodea", url, key, a_site, extra_env=env))
        await nodes[-1].start()
        if not await wait_until(lambda: any(n.hostname == "nodea" for n in store.nodes.values()), 60):
            result["error"] = "node A never registered"
            return result
        a = next(n for n in store.nodes.values() if n.hostname == "nodea")
        b_site = proxy_site("nodeb", proxy_port, str(a.ipv4))
        nodes.append(CaddyNode(workdir, "nodeb", url, key, b_site, extra_env=env))
        await nodes[-1].start()
        deadline = time.monotonic() + 60
        fetched = False
        while not fetched and time.monotonic() < deadline:
            fetched = await fetch(proxy_port, payload)
            if not fetched:
                await asyncio.sleep(1)
        result["fetched_before"] = fetched
        if not fetched:
            result["error"] = "B never fetched A's file"
            return result
        b = next(n for n in store.nodes.values() if n.hostname == "nodeb")  # as it is at the expiry
        b_key = NodePublic.from_text(b.node_key)
        result["b_on_relay_before"] = derp.is_client_connected(b_key)
        result["b_online_before"] = store.is_online(b.id)

        expired_at = time.monotonic()
        await store.set_expiry(b.id, datetime.now(UTC))
        result["b_stream_closed"] = await wait_until(lambda: not store.is_online(b.id), 10)
        result["stream_closed_after_s"] = round(time.monotonic() - expired_at, 3)
        result["b_relay_closed"] = await wait_until(lambda: not derp.is_client_connected(b_key), 10)
        result["relay_closed_after_s"] = round(time.monotonic() - expired_at, 3)
        # B's client keeps trying; for the next few seconds it must never be on the relay or online again.
        result["b_came_back"] = await comes_back(store, derp, b.id, b_key, 8)
        result["fetched_after"] = await fetch(proxy_port, payload)
        # Whatever B reported after its expiry (its home DERP changes as the relay drops it) was refused.
        after = store.nodes[b.id]
        before = (b.endpoints, b.hostinfo, b.disco_key)
        result["b_record_unchanged"] = (after.endpoints, after.hostinfo, after.disco_key) == before
        result["ok"] = True
        return result
    finally:
        await stop_nodes(nodes, result)
        await server.stop()


def run() -> None:
    if len(sys.argv) > 1:
        workdir = Path(sys.argv[1])
        workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(asyncio.run(main(workdir))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(Path(tmp)))))


if __name__ == "__main__":
    run()
