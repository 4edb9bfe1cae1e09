"""Crash safety with real clients: SIGKILL the server, start it again, and the tsnet nodes carry on by
themselves.

The server runs as `python -m pyheadscale -c config.yaml serve` (the command a user runs). Two tsnet nodes
join and exchange HTTP; the server is killed with SIGKILL (no shutdown code runs) and started again on the
same data directory. Every node must still be registered with the same id and addresses, both clients must
reconnect on their own, and HTTP between them must work again, through the restarted server's relay.

Runs inside a private namespace (see netns.py); prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable by hand, without PYTHONPATH

from tests.e2e.caddynode import CaddyNode, proxy_site, responder_site, stop_nodes
from tests.e2e.netns import setup_loopback_only
from tests.e2e.policy_login_driver import BODY, fetch_until
from tests.ports import free_port

ALWAYS_DERP = {"TS_DEBUG_ALWAYS_USE_DERP": "1"}


class ServerProcess:
    def __init__(self, workdir: Path, config_path: Path) -> None:
        self.workdir, self.config_path = workdir, config_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, url: str) -> None:
        log = (self.workdir / "server.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyheadscale", "-c", str(self.config_path), "serve", stdout=log, stderr=log
        )
        # Generous: on a loaded 2-core machine a fresh interpreter takes seconds just to import.
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                try:
                    async with http.get(f"{url}/health") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await self.proc.wait()


async def cli(config_path: Path, *argv: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pyheadscale",
        "-c",
        str(config_path),
        *argv,
        "-o",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"pyheadscale {' '.join(argv)}: {err.decode()}")
    return json.loads(out)


def nodes_in_db(db_path: Path) -> dict[str, tuple[int, str]]:
    with sqlite3.connect(db_path) as db:
        return {
            host: (node_id, ipv4)
            for node_id, host, ipv4 in db.execute("SELECT id, hostname, ipv4 FROM nodes")
        }


async def main(workdir: Path) -> dict[str, Any]:
    setup_loopback_only()
    port, stun_port, proxy_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    raw = {
        "server_url": url,
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": "",
        "unix_socket": "pyheadscale.sock",
        "database": {"sqlite": {"path": "db.sqlite"}},
        "derp": {"server": {"enabled": True, "stun_listen_addr": f"127.0.0.1:{stun_port}"}},
    }
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    server = ServerProcess(workdir, config_path)
    result: dict[str, Any] = {"ok": False}
    nodes: list[CaddyNode] = []
    try:
        await server.start(url)
        await cli(config_path, "users", "create", "alice")
        key = (await cli(config_path, "preauthkeys", "create", "-u", "1", "--reusable"))["key"]
        node_a = CaddyNode(
            workdir,
            "nodea",
            url,
            key,
            responder_site("nodea", BODY),
            extra_env=ALWAYS_DERP,
        )
        nodes.append(node_a)
        await node_a.start()
        for _ in range(300):
            if "nodea" in nodes_in_db(workdir / "db.sqlite"):
                break
            await asyncio.sleep(0.2)
        a_ip = nodes_in_db(workdir / "db.sqlite")["nodea"][1]
        node_b = CaddyNode(
            workdir,
            "nodeb",
            url,
            key,
            proxy_site("nodeb", proxy_port, a_ip),
            extra_env=ALWAYS_DERP,
        )
        nodes.append(node_b)
        await node_b.start()
        status, _ = await fetch_until(proxy_port, True, 90)
        result["before"] = status
        before = nodes_in_db(workdir / "db.sqlite")

        await server.kill()
        status, _ = await fetch_until(proxy_port, False, 30)
        result["while_down"] = status
        await server.start(url)
        result["after_nodes_same"] = nodes_in_db(workdir / "db.sqlite") == before and len(before) == 2
        status, seconds = await fetch_until(proxy_port, True, 120)
        result["after"] = {"status": status, "seconds": seconds}
        # The clients' map polls come back on their own, after their reconnect backoff.
        for waited in range(90):
            listed = await cli(config_path, "nodes", "list")
            result["online_after"] = {n["given_name"]: n.get("online", False) for n in listed}
            result["online_after_seconds"] = waited
            if all(result["online_after"].values()):
                break
            await asyncio.sleep(1)
        result["ok"] = True
        return result
    finally:
        await stop_nodes(nodes, result)
        if not result.get("ok"):
            result["server_log"] = (workdir / "server.log").read_text(errors="replace")[-3000:]
        await server.stop()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(Path(tmp)))))
