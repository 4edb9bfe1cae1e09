"""Interactive login and policy enforcement with real tsnet clients.

Node A joins without an auth key: the driver finds its pending login and approves it with the real CLI
(`pyheadscale auth register` over the unix socket). Node B joins with a preauth key and fetches A's page over
the tailnet. Then the policy file changes: first to one that allows only port 22 (B's fetch must fail: A's
packet filter drops it), then back to one that allows port 80 (the fetch works again), each picked up by the
server's file watcher and pushed to the connected nodes without either reconnecting. Last, a third node joins
and each tsnet node's own log tells when its network map first held it.

Runs inside a private namespace (see netns.py); prints one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable by hand, without PYTHONPATH

from pyheadscale.app import Server
from pyheadscale.client.control import ControlClient
from pyheadscale.config import build_config
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.e2e.caddynode import CaddyNode, proxy_site, responder_site, stop_nodes
from tests.e2e.netns import setup_loopback_only
from tests.e2e.twonode_driver import http_get, wait_until
from tests.ports import free_port

BODY = b"hello from node A"
ALLOW_WEB = {"acls": [{"action": "accept", "src": ["*"], "dst": ["*:80"]}]}
ALLOW_SSH_ONLY = {"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}]}
PEERS_LOG = re.compile(r"magicsock: got updated network map; (\d+) peers")


async def fetch(port: int) -> tuple[int, bytes]:
    with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
        return await http_get(port, "/")
    return 0, b""


async def fetch_until(port: int, want_ok: bool, limit: float) -> tuple[int, float]:
    """Fetch until the outcome is what we want (ok: 200 with A's body), or until `limit` seconds pass."""
    started = time.monotonic()
    status = 0
    while time.monotonic() - started < limit:
        status, body = await fetch(port)
        if (status == 200 and body == BODY) == want_ok:
            return status, time.monotonic() - started
        await asyncio.sleep(0.5)
    return status, -1.0


def map_updates(node: CaddyNode, since: float) -> list[tuple[float, int]]:
    """(time, peer count) of each network map the node's tsnet took in after `since` (its own log says so)."""
    out = []
    for line in node.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError):
            entry = json.loads(line)
            match = PEERS_LOG.search(str(entry.get("msg", "")))
            if match and entry["ts"] >= since:
                out.append((float(entry["ts"]), int(match.group(1))))
    return out


def stream_restarts(node: CaddyNode, since: float) -> int:
    """Map polls the node opened after `since`: a reconnect would open a new streaming poll."""
    count = 0
    for line in node.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError):
            entry = json.loads(line)
            count += entry["ts"] >= since and "PollNetMap: stream=true" in str(entry.get("msg", ""))
    return count


async def third_node_joins(server: Server, key: str, nodes: list[CaddyNode]) -> dict[str, Any]:
    """A third node (our own TS2021 client) joins; how long until each tsnet node's map has it?"""
    client = ControlClient(server.config.server_url, MachinePrivate.generate())
    await client.connect()
    node_key = NodePrivate.generate()
    joined = time.time()
    await client.register(node_key, auth_key=key, hostname="nodec")
    stream = client.map_stream(node_key, hostname="nodec")
    try:
        await asyncio.wait_for(stream.__anext__(), 10)
        await wait_until(lambda: all(any(n == 2 for _, n in map_updates(c, joined)) for c in nodes), 10)
        delays = {}
        for caddy in nodes:
            seen = [t for t, n in map_updates(caddy, joined) if n == 2]
            delays[caddy.name] = (seen[0] - joined) if seen else None
        return {"delays": delays, "restarts": {c.name: stream_restarts(c, joined) for c in nodes}}
    finally:
        await stream.aclose()
        await client.close()


async def main(workdir: Path) -> dict[str, Any]:
    setup_loopback_only()
    port, stun_port, proxy_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    policy_file = workdir / "policy.hujson"
    policy_file.write_text("// everyone may reach web servers\n" + json.dumps(ALLOW_WEB))
    raw = {
        "server_url": url,
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": "",
        "unix_socket": str(workdir / "pyheadscale.sock"),
        "derp": {"server": {"enabled": True, "stun_listen_addr": f"127.0.0.1:{stun_port}"}},
        "policy": {"mode": "file", "path": str(policy_file)},
    }
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    server = Server(build_config(raw, data_dir=workdir / "server"))
    await server.start()
    store, policy = server.store, server.policy
    assert store is not None and policy is not None
    result: dict[str, Any] = {"ok": False}
    nodes: list[CaddyNode] = []
    try:
        user = await store.create_user("alice")
        _, key = await store.create_preauth_key(user.id, reusable=True)

        node_a = CaddyNode(workdir, "nodea", url, None, responder_site("nodea", BODY))
        nodes.append(node_a)
        await node_a.start()
        if not await wait_until(lambda: bool(server.logins.list()), 60):
            result["error"] = "node A never asked to log in"
            return result
        [login] = server.logins.list()
        cli = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "pyheadscale",
                "-c",
                str(config_path),
                "auth",
                "register",
                "--auth-id",
                login.auth_id,
                "--user",
                "alice",
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        result["cli"] = {"code": cli.returncode, "stderr": cli.stderr[-500:]}
        if cli.returncode != 0:
            return result
        a_joined = await wait_until(
            lambda: any(n.hostname == "nodea" and store.is_online(n.id) for n in store.nodes.values()), 60
        )
        result["a_interactive"] = (
            a_joined
            and next(n.register_method for n in store.nodes.values() if n.hostname == "nodea") == "cli"
        )
        a = next(n for n in store.nodes.values() if n.hostname == "nodea")

        node_b = CaddyNode(
            workdir,
            "nodeb",
            url,
            key,
            proxy_site("nodeb", proxy_port, str(a.ipv4)),
        )
        nodes.append(node_b)
        await node_b.start()
        status, _ = await fetch_until(proxy_port, True, 90)
        result["allowed_first"] = status == 200

        policy_file.write_text(json.dumps(ALLOW_SSH_ONLY))
        status, seconds = await fetch_until(proxy_port, False, 30)
        result["denied"] = {"status": status, "after": seconds, "policy_in_force": policy.text}

        policy_file.write_text(json.dumps(ALLOW_WEB))
        status, seconds = await fetch_until(proxy_port, True, 30)
        result["allowed_again"] = {"status": status, "after": seconds}
        result["sessions_stayed"] = all(store.is_online(n.id) for n in store.nodes.values())
        result["third_node"] = await third_node_joins(server, key, nodes)
        result["ok"] = True
        return result
    finally:
        await stop_nodes(nodes, result)
        await server.stop()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(Path(tmp)))))
