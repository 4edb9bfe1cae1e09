"""A real tailscaled joins pyheadscale, then `tailscale logout`: the node must lose its stream and its relay.

usage: logout_driver.py TAILSCALED TAILSCALE [WORKDIR]

tailscaled runs with userspace networking, its state, socket and statedir under WORKDIR, the embedded relay as
its DERP server. After `tailscale up --authkey`, it is connected (map stream open, on the relay); after
`tailscale logout` the node must be expired in the store, its map stream closed, its relay connection closed,
and neither may come back while tailscaled keeps running. Runs inside a private namespace (see
tests/e2e/netns.py) and prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable by hand, without PYTHONPATH

from pyheadscale.app import Server
from pyheadscale.tailkey import NodePublic
from tests.authz.revocation_lab import comes_back, loopback_config
from tests.e2e.netns import CLIENT_ENV, setup_loopback_only
from tests.e2e.twonode_driver import wait_until
from tests.processes import stop_process


async def cli(tailscale: str, socket_path: Path, *args: str, limit: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        tailscale,
        "--socket",
        str(socket_path),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, **CLIENT_ENV),
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -1, out.decode(errors="replace")
    return proc.returncode or 0, out.decode(errors="replace")


async def main(tailscaled: str, tailscale: str, workdir: Path) -> dict[str, Any]:
    setup_loopback_only()
    config, url = loopback_config(workdir)
    result: dict[str, Any] = {"ok": False}
    server = Server(config)
    await server.start()
    state = workdir / "ts"
    state.mkdir(parents=True, exist_ok=True)
    socket_path = state / "tailscaled.sock"
    log = (workdir / "tailscaled.log").open("ab")
    daemon = await asyncio.create_subprocess_exec(
        tailscaled,
        "--tun=userspace-networking",
        f"--state={state / 'tailscaled.state'}",
        f"--socket={socket_path}",
        f"--statedir={state}",
        "--port=0",
        env=dict(os.environ, **CLIENT_ENV),
        stdout=log,
        stderr=log,
    )
    try:
        store, derp = server.store, server.derp
        assert store is not None and derp is not None
        user = await store.create_user("alice")
        _, key = await store.create_preauth_key(user.id)
        if not await wait_until(socket_path.exists, 30):
            result["error"] = "tailscaled never opened its socket"
            return result
        code, out = await cli(
            tailscale, socket_path, "up", "--login-server", url, "--authkey", key, "--hostname", "ts1"
        )
        result["up"] = {"code": code, "out": out[-2000:]}
        if not await wait_until(lambda: len(store.nodes) == 1, 30):
            result["error"] = "tailscaled never registered"
            return result
        node = next(iter(store.nodes.values()))
        node_key = NodePublic.from_text(node.node_key)
        result["online_before"] = await wait_until(lambda: store.is_online(node.id), 30)
        result["on_relay_before"] = await wait_until(lambda: derp.is_client_connected(node_key), 30)

        started = time.monotonic()
        code, out = await cli(tailscale, socket_path, "logout")
        result["logout"] = {"code": code, "out": out[-2000:]}
        result["expired"] = store.node_by_node_key(node.node_key) is not None and store.is_expired(
            store.nodes[node.id]
        )
        result["stream_closed"] = await wait_until(lambda: not store.is_online(node.id), 10)
        result["relay_closed"] = await wait_until(lambda: not derp.is_client_connected(node_key), 10)
        result["closed_after_s"] = round(time.monotonic() - started, 3)
        result["came_back"] = await comes_back(store, derp, node.id, node_key, 6)
        code, out = await cli(tailscale, socket_path, "status", "--json", limit=20)
        try:
            result["backend_state"] = json.loads(out).get("BackendState")
        except ValueError:
            result["backend_state"] = None
        result["ok"] = True
        return result
    finally:
        await stop_process(daemon)
        log.close()
        if not result.get("ok"):
            result["log"] = (workdir / "tailscaled.log").read_text(errors="replace")[-4000:]
        await server.stop()


def run() -> None:
    tailscaled, tailscale = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        workdir = Path(sys.argv[3])
        workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(asyncio.run(main(tailscaled, tailscale, workdir))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(tailscaled, tailscale, Path(tmp)))))


if __name__ == "__main__":
    run()
