"""Two tsnet nodes join pyheadscale with preauth keys; node B fetches a page served by node A over the tailnet.

Runs inside a private namespace (see netns.py); prints one JSON result line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pyheadscale.app import Server  # noqa: E402
from pyheadscale.config import build_config  # noqa: E402
from tests.e2e.caddynode import CaddyNode  # noqa: E402
from tests.e2e.netns import setup_loopback_only  # noqa: E402

BODY = "hello from node A over the tailnet"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def http_get(port: int, timeout: float = 5.0) -> tuple[int, str]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    head, _, body = raw.decode(errors="replace").partition("\r\n\r\n")
    return int(head.split(" ", 2)[1]), body


async def wait_for(predicate, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return False


async def main(workdir: Path) -> dict:
    setup_loopback_only()
    port, stun_port, proxy_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    config = build_config({
        "server_url": url, "listen_addr": f"127.0.0.1:{port}", "metrics_listen_addr": "",
        "derp": {"server": {"enabled": True, "stun_listen_addr": f"127.0.0.1:{stun_port}"}},
    }, data_dir=workdir / "server")
    server = Server(config)
    await server.start()
    store = server.store
    result: dict = {"ok": False}
    nodes: list[CaddyNode] = []
    try:
        user = await store.create_user("alice")
        _, key = await store.create_preauth_key(user.id, reusable=True)
        node_a = CaddyNode(workdir, "nodea", url, key, f":80 {{\n  bind tailscale/nodea\n  respond \"{BODY}\"\n}}\n")
        nodes.append(node_a)
        await node_a.start()
        if not await wait_for(lambda: any(n.hostname == "nodea" for n in store.nodes.values()), 60):
            result["error"] = "node A never registered"
            return result
        a = next(n for n in store.nodes.values() if n.hostname == "nodea")
        node_b = CaddyNode(workdir, "nodeb", url, key,
                           f":{proxy_port} {{\n  bind 127.0.0.1\n"
                           f"  reverse_proxy http://{a.ipv4}:80 {{\n    transport tailscale nodeb\n  }}\n}}\n")
        nodes.append(node_b)
        await node_b.start()
        status, body = 0, ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                status, body = await http_get(proxy_port)
                if status == 200 and BODY in body:
                    break
            except (OSError, TimeoutError, ValueError, IndexError):
                pass
            await asyncio.sleep(1)
        result.update(status=status, body=body[:200], ok=status == 200 and BODY in body)
        result["registered"] = len(store.nodes) == 2
        result["nodes"] = {n.hostname: {"ip": str(n.ipv4), "online": store.is_online(n.id), "derp": n.home_derp}
                           for n in store.nodes.values()}
        return result
    finally:
        for node in nodes:
            await node.stop()
        if not result.get("ok"):
            result["logs"] = {n.name: n.log_tail() for n in nodes}
        await server.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1:  # keep the work directory (logs, state) for debugging
        logging.basicConfig(filename=Path(sys.argv[1]) / "server.log", level=logging.DEBUG)
        print(json.dumps(asyncio.run(main(Path(sys.argv[1])))))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(asyncio.run(main(Path(tmp)))))
