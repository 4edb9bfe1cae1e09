"""Crash safety: nodes registered with a server process survive its SIGKILL and reconnect to its successor."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from pyheadscale.client.control import ControlClient
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.live_server import LiveServer, MapReader
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def write_config(data_dir: Path, port: int) -> Path:
    config = {
        "server_url": f"http://127.0.0.1:{port}",
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": "",
        "unix_socket": "",
        "data_dir": str(data_dir),
        "derp": {"server": {"enabled": False}},
        "log": {"level": "warn"},
    }
    path = data_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pyheadscale", "-c", str(config), "serve"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def log_tail(log: Path) -> str:
    return log.read_text()[-2000:]


async def start_process(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = spawn(config, log)

    async def ready() -> None:
        while True:
            assert proc.poll() is None, f"server exited early: {log_tail(log)}"
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = await reader.read()
            writer.close()
            if b" 200 " in head.split(b"\r\n", 1)[0]:
                return
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(ready(), 60)  # a fresh interpreter on a loaded machine is slow to start
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the server has not exited within 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def prepare(tmp_path: Path) -> tuple[Path, int, Path, str]:
    """A server's config, port and log file, and a reusable key of a user made by an in-process server on
    the same data directory."""
    data_dir = tmp_path / "data"
    port = free_port()
    setup = LiveServer(data_dir, port=port)
    await setup.start()
    auth_key = await setup.preauth_key()
    await setup.stop()
    return write_config(data_dir, port), port, tmp_path / "server.log", auth_key


async def first_map(client: ControlClient, node_key: NodePrivate, want_peers: int) -> dict[str, Any]:
    reader = MapReader(client.map_stream(node_key))
    try:
        return await reader.wait_for(lambda m: len(m.get("Peers", [])) == want_peers or "Node" in m, 5)
    finally:
        await reader.close()


async def test_sigkill_and_restart_keeps_nodes(tmp_path: Path) -> None:
    config, port, log, auth_key = await prepare(tmp_path)
    url = f"http://127.0.0.1:{port}"
    machines = [MachinePrivate.generate() for _ in range(2)]
    node_keys = [NodePrivate.generate() for _ in range(2)]

    proc = await start_process(config, port, log)
    try:
        clients = [ControlClient(url, m) for m in machines]
        for client, node_key, name in zip(clients, node_keys, ("one", "two"), strict=True):
            await client.connect()
            answer = await client.register(node_key, auth_key=auth_key, hostname=name)
            assert answer["MachineAuthorized"], answer
        before = [await first_map(c, k, 1) for c, k in zip(clients, node_keys, strict=True)]
        for client in clients:
            await client.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    identities = {m["Node"]["Key"]: (m["Node"]["ID"], m["Node"]["Addresses"]) for m in before}
    assert len({ident[0] for ident in identities.values()}) == 2
    assert [p["ID"] for p in before[0]["Peers"]] == [before[1]["Node"]["ID"]]

    proc = await start_process(config, port, log)
    try:
        clients = [ControlClient(url, m) for m in machines]
        after = []
        for client, node_key in zip(clients, node_keys, strict=True):
            await client.connect()
            check = await client.register(node_key)  # a restarting client re-checks its registration
            assert check["MachineAuthorized"] and not check["Error"], check
            after.append(await first_map(client, node_key, 1))
        for m in after:
            assert identities[m["Node"]["Key"]] == (m["Node"]["ID"], m["Node"]["Addresses"])
        assert [p["ID"] for p in after[0]["Peers"]] == [after[1]["Node"]["ID"]]
        assert [p["ID"] for p in after[1]["Peers"]] == [after[0]["Node"]["ID"]]
        assert after[0]["Peers"][0]["Addresses"] == after[1]["Node"]["Addresses"]
        for client in clients:
            await client.close()
    finally:
        stop(proc)


async def test_sigkill_mid_registration_burst_loses_no_answered_node(tmp_path: Path) -> None:
    """A node the server answered as registered is in the database, however the process dies.

    Many nodes register at once (the start of a storm); the server is SIGKILLed as soon as some have their
    answer and others are still in flight. After a restart every answered node is still registered, under
    the same node key. Nodes cut off before their answer may or may not exist: both are correct.
    """
    config, port, log, auth_key = await prepare(tmp_path)
    url = f"http://127.0.0.1:{port}"
    count, kill_after = 120, 30
    machines = [MachinePrivate.generate() for _ in range(count)]
    node_keys = [NodePrivate.generate() for _ in range(count)]
    answered: set[int] = set()
    enough = asyncio.Event()

    async def register(i: int) -> None:
        client = ControlClient(url, machines[i])
        try:
            await client.connect()
            answer = await client.register(node_keys[i], auth_key=auth_key, hostname=f"burst-{i}")
            if answer.get("MachineAuthorized"):
                answered.add(i)
                if len(answered) >= kill_after:
                    enough.set()
        except Exception:  # cut off by the kill: nothing is claimed for this node
            pass
        finally:
            await client.close()

    proc = await start_process(config, port, log)
    try:
        tasks = [asyncio.create_task(register(i)) for i in range(count)]
        await asyncio.wait_for(enough.wait(), 120)
        proc.send_signal(signal.SIGKILL)
        await asyncio.gather(*tasks)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert kill_after <= len(answered) < count, "the kill did not come in the middle of the burst"

    proc = await start_process(config, port, log)
    try:
        for i in sorted(answered):
            client = ControlClient(url, machines[i])
            await client.connect()
            check = await client.register(node_keys[i])  # no auth key: only a registered node is authorized
            assert check["MachineAuthorized"] and not check["Error"], (i, check)
            full = await first_map(client, node_keys[i], 0)
            assert full["Node"]["Key"] == node_keys[i].public().text
            await client.close()
    finally:
        stop(proc)
