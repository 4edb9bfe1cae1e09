"""Two tsnet nodes join pyheadscale; node B fetches a file node A serves on the tailnet, via a chosen relay.

usage: twonode_driver.py [--relay embedded|standalone|mesh] [--always-derp] [WORKDIR]

Relays:

* embedded: pyheadscale's own DERP and STUN servers, region 999 of the map it serves.
* standalone: one `python -m derp`; pyheadscale's relay is off (`derp.server.enabled: false`) and the relay is
  the one region of a `derp.paths` map file (Headscale-style YAML).
* mesh: two `python -m derp` meshed with one key, both listed as nodes of one region of the map file
  (tailcfg JSON). A client dials the first reachable node of its home region (derphttp's dialRegion), so both
  nodes would land on the first relay; instead each node is pinned to its own relay with
  TS_DEBUG_USE_DERP_ADDR (magicsock then replaces the map with region 999 at that address, port 3340 under
  TS_DEBUG_USE_DERP_HTTP). A's and B's packets can then only meet over the mesh link.

`--always-derp` sets TS_DEBUG_ALWAYS_USE_DERP=1: magicsock binds no UDP socket, so every WireGuard packet goes
through a relay. Without it the nodes netcheck against the STUN server and report their UDP endpoints.

The file (PAYLOAD_SIZE random bytes) is larger than anything else the nodes exchange, so a relay's byte
counters show whether the HTTP exchange itself went through it.

Runs inside a private namespace (see netns.py); WORKDIR keeps logs and state for debugging. Prints one JSON
line: the HTTP outcome, the nodes as the store sees them, each relay's counters and each node's netcheck
evidence.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable by hand, without PYTHONPATH

from pyheadscale.app import Server
from pyheadscale.config import build_config
from pyheadscale.state.models import Node
from tests.e2e.caddynode import CaddyNode, proxy_site
from tests.e2e.netns import setup_loopback_only
from tests.e2e.relays import StandaloneRelay, write_derp_map
from tests.ports import free_port

PAYLOAD_SIZE = 128 * 1024
MAP_REGION = 900
MESH_HOSTS = ("127.0.0.2", "127.0.0.3")
"""Each meshed relay gets its own loopback address, so both can take port 3340, the port
TS_DEBUG_USE_DERP_ADDR implies; STUN keeps its default port 3478 for the same reason."""
PINNED_DERP_PORT, DEFAULT_STUN_PORT = 3340, 3478


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def wait_until(predicate: Callable[[], bool], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.2)
    return False


def node_evidence(node: CaddyNode) -> dict[str, Any]:
    """What the node's tsnet logged about its network: the last netcheck report and whether UDP was off."""
    messages = []
    for line in node.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            messages.append(str(json.loads(line).get("msg", "")))
    reports = [m for m in messages if "netcheck: [v1] report:" in m]
    return {
        "netcheck": reports[-1] if reports else None,
        "udp_disabled": any("disabled udp4 per TS_DEBUG_ALWAYS_USE_DERP" in m for m in messages),
    }


class Relays:
    """The relay set-up of one scenario: pyheadscale's config for it, each node's pinning, the counters."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind, self.workdir = kind, workdir
        self.standalone: list[StandaloneRelay] = []
        self.node_env: dict[str, dict[str, str]] = {"nodea": {}, "nodeb": {}}
        if kind == "standalone":
            self.standalone = [
                StandaloneRelay(workdir, "relay", "127.0.0.1", free_port(), free_port(socket.SOCK_DGRAM))
            ]
        elif kind == "mesh":
            psk = workdir / "mesh.key"
            psk.write_text("ab" * 32 + "\n")
            urls = [f"http://{host}:{PINNED_DERP_PORT}/derp" for host in MESH_HOSTS]
            self.standalone = [
                StandaloneRelay(
                    workdir,
                    f"relay{i + 1}",
                    host,
                    PINNED_DERP_PORT,
                    DEFAULT_STUN_PORT,
                    mesh_psk_file=psk,
                    mesh_with=[urls[1 - i]],
                )
                for i, host in enumerate(MESH_HOSTS)
            ]
            self.node_env = {
                "nodea": {"TS_DEBUG_USE_DERP_ADDR": MESH_HOSTS[0]},
                "nodeb": {"TS_DEBUG_USE_DERP_ADDR": MESH_HOSTS[1]},
            }

    def derp_config(self) -> dict[str, Any]:
        if self.kind == "embedded":
            stun_port = free_port(socket.SOCK_DGRAM)
            return {"server": {"enabled": True, "stun_listen_addr": f"127.0.0.1:{stun_port}"}}
        path = self.workdir / ("derpmap.yaml" if self.kind == "standalone" else "derpmap.json")
        nodes = [relay.derp_node(MAP_REGION, chr(ord("a") + i)) for i, relay in enumerate(self.standalone)]
        write_derp_map(path, MAP_REGION, nodes)
        return {"server": {"enabled": False}, "paths": [str(path)]}

    async def start(self) -> None:
        for relay in self.standalone:
            await relay.start()
        for relay, peer in zip(self.standalone, reversed(self.standalone), strict=True):
            if relay is not peer:
                await relay.wait_for_log(f"mesh {peer.url}: connected")

    async def stop(self) -> dict[str, dict[str, Any] | None]:
        return {relay.name: await relay.stop() for relay in self.standalone}

    def log_tails(self) -> dict[str, str]:
        return {relay.name: relay.log_text()[-3000:] for relay in self.standalone}


async def main(workdir: Path, relay_kind: str, always_derp: bool) -> dict[str, Any]:
    setup_loopback_only()
    port, proxy_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    relays = Relays(relay_kind, workdir)
    config = build_config(
        {
            "server_url": url,
            "listen_addr": f"127.0.0.1:{port}",
            "metrics_listen_addr": "",
            "derp": relays.derp_config(),
        },
        data_dir=workdir / "server",
    )
    result: dict[str, Any] = {"ok": False, "relay": relay_kind, "always_derp": always_derp}
    server = Server(config)
    nodes: list[CaddyNode] = []
    await server.start()
    try:
        await relays.start()
        store = server.store
        assert store is not None
        user = await store.create_user("alice")
        _, key = await store.create_preauth_key(user.id, reusable=True)

        def node(name: str, site: str) -> CaddyNode:
            env = dict(relays.node_env[name], **({"TS_DEBUG_ALWAYS_USE_DERP": "1"} if always_derp else {}))
            nodes.append(CaddyNode(workdir, name, url, key, site, extra_env=env))
            return nodes[-1]

        site = workdir / "site"
        site.mkdir(exist_ok=True)
        payload = os.urandom(PAYLOAD_SIZE)
        (site / "payload.bin").write_bytes(payload)
        await node("nodea", f":80 {{\n  bind tailscale/nodea\n  root * {site}\n  file_server\n}}\n").start()
        if not await wait_until(lambda: any(n.hostname == "nodea" for n in store.nodes.values()), 60):
            result["error"] = "node A never registered"
            return result
        a = next(n for n in store.nodes.values() if n.hostname == "nodea")
        await node("nodeb", proxy_site("nodeb", proxy_port, str(a.ipv4))).start()
        status, body = 0, b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
                status, body = await http_get(proxy_port, "/payload.bin")
                if status == 200 and body == payload:
                    break
            await asyncio.sleep(1)
        result.update(status=status, received=len(body), ok=status == 200 and body == payload)

        # The home region and endpoints reach the store in map requests after netcheck, possibly after the
        # fetch; give the nodes a moment to report them (UDP endpoints only exist when UDP is on).
        def reported(n: Node) -> bool:
            return bool(n.home_derp and (n.endpoints or always_derp))

        await wait_until(lambda: all(reported(n) for n in store.nodes.values()), 15)
        result["registered"] = len(store.nodes) == 2
        result["nodes"] = {
            n.hostname: {
                "ip": str(n.ipv4),
                "online": store.is_online(n.id),
                "derp": n.home_derp,
                "endpoints": list(n.endpoints),
            }
            for n in store.nodes.values()
        }
        return result
    finally:
        for caddy in nodes:
            await caddy.stop()
        result["evidence"] = {caddy.name: node_evidence(caddy) for caddy in nodes}
        result["relays"] = await relays.stop()
        if server.derp is not None:
            result["relays"]["embedded"] = server.derp.stats()
        if not result.get("ok"):
            result["logs"] = {caddy.name: caddy.log_tail() for caddy in nodes} | relays.log_tails()
        await server.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relay", choices=["embedded", "standalone", "mesh"], default="embedded")
    parser.add_argument("--always-derp", action="store_true", help="TS_DEBUG_ALWAYS_USE_DERP=1 on both nodes")
    parser.add_argument("workdir", nargs="?", type=Path, help="keep logs and state here (default: a tmp dir)")
    return parser.parse_args()


def run() -> None:
    args = parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(filename=args.workdir / "server.log", level=logging.DEBUG)
        print(json.dumps(asyncio.run(main(args.workdir, args.relay, args.always_derp))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(Path(tmp), args.relay, args.always_derp))))


if __name__ == "__main__":
    run()
