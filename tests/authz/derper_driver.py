"""Tailscale's own derper asks pyheadscale's /verify (`--verify-client-url`): who does it admit?

usage: derper_driver.py DERPER [WORKDIR]

Runs inside a private namespace (see tests/e2e/netns.py): pyheadscale with three nodes (current, expired,
deleted), then Go's derper on plain HTTP with `--verify-client-url .../verify` and fail-open off, and our DERP
client logging in with each node key and with a key pyheadscale never saw. Prints one JSON line: which keys
the relay admitted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable by hand, without PYTHONPATH

from derp.client import DerpClient
from pyheadscale.app import Server
from pyheadscale.config import build_config
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.authz.conftest import REFUSED
from tests.e2e.netns import setup_loopback_only
from tests.ports import free_port


async def admitted(url: str, node_key: NodePrivate) -> bool:
    try:
        async with asyncio.timeout(20):
            client = await DerpClient.connect(url, node_key)
            # derper refuses after ServerInfo is due; a refused client sees the connection end.
            await client.ping(b"87654321")
            await client.recv()
    except REFUSED:
        return False
    await client.close()
    return True


async def main(derper: str, workdir: Path) -> dict[str, Any]:
    setup_loopback_only()
    port, derp_port = free_port(), free_port()
    config = build_config(
        {
            "server_url": f"http://127.0.0.1:{port}",
            "listen_addr": f"127.0.0.1:{port}",
            "metrics_listen_addr": "",
            "derp": {"server": {"enabled": False}},
        },
        data_dir=workdir / "server",
    )
    server = Server(config)
    await server.start()
    log = (workdir / "derper.log").open("ab")
    proc = None
    result: dict[str, Any] = {"ok": False}
    try:
        store = server.store
        assert store is not None
        user = await store.create_user("alice")
        node_keys = {name: NodePrivate.generate() for name in ("current", "expired", "deleted", "unknown")}
        ids = {}
        for name in ("current", "expired", "deleted"):
            node = await store.register(
                machine_key=MachinePrivate.generate().public().text,
                node_key=node_keys[name].public().text,
                hostinfo={"Hostname": name},
                user_id=user.id,
                tags=[],
                method="cli",
                ephemeral=False,
                expiry=None,
            )
            ids[name] = node.id
        await store.set_expiry(ids["expired"], datetime.now(UTC))
        await store.delete_node(ids["deleted"])
        proc = await asyncio.create_subprocess_exec(
            derper,
            "-a",
            f"127.0.0.1:{derp_port}",
            "-c",
            str(workdir / "derper.json"),
            "--http-port=-1",
            "--stun=false",
            f"--verify-client-url=http://127.0.0.1:{port}/verify",
            "--verify-client-url-fail-open=false",
            stdout=log,
            stderr=log,
        )
        url = f"http://127.0.0.1:{derp_port}/derp"
        for _ in range(100):
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", derp_port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        result["admitted"] = {name: await admitted(url, key) for name, key in node_keys.items()}
        result["ok"] = True
        return result
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await proc.wait()
        log.close()
        if not result["ok"]:
            result["log"] = (workdir / "derper.log").read_text(errors="replace")[-3000:]
        await server.stop()


def run() -> None:
    derper = sys.argv[1]
    if len(sys.argv) > 2:
        workdir = Path(sys.argv[2])
        workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(asyncio.run(main(derper, workdir))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(derper, Path(tmp)))))


if __name__ == "__main__":
    run()
