"""Memory under attack, measured: each exhaustion attack of issue 8, at scale, against a real server.

Starts `python -m pyheadscale -c CFG serve` on 127.0.0.1 (nothing here talks to any other address), then runs
each attack for `--seconds` and prints the server's RSS and open file descriptors before, at their peak
during, and after the attack (once the server's timeouts have had time to close what the attack left open).
The server runs with its default limits except shorter timeouts (`--timeout`), so the run stays short; what
is measured is that every figure stays bounded and comes back down.

Attacks (all unauthenticated unless noted):
  audit-flood     refused registrations with the longest Hostname allowed, and 1 MB ones (refused as 400)
  login-flood     interactive logins from as many machine keys as the server lets one address start
  h2-bodies       TS2021 connections each holding 64 HTTP/2 requests whose bodies never finish
  idle-sockets    TCP connections that send nothing, or a request head one byte at a time
  handshakes      TS2021 upgrades as fast as one process can send them
  hostinfo-push   (registered nodes) one node sending maximal Hostinfo changes to 10 streaming peers
  idle-maps       (registered nodes) open map streams that never send again: the cost of one is reported

Usage: python benchmarks/attack_memory.py [--seconds 10] [--timeout 3] [--attack NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyheadscale.client.control import ControlClient, ControlClientError, fetch_server_key
from pyheadscale.tailkey import MachinePrivate, MachinePublic, NodePrivate
from tests.live_server import send_request_headers
from tests.ports import free_port

MiB = 1 << 20
BAD_KEY = "hskey-auth-000000000000-" + "0" * 64


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Sample:
    rss: int
    fds: int


def sample(pid: int) -> Sample:
    rss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return Sample(rss, len(os.listdir(f"/proc/{pid}/fd")))


@dataclass
class Row:
    attack: str
    before: Sample
    peak: Sample
    after: Sample
    notes: dict[str, Any] = field(default_factory=dict)


class Server:
    """A `pyheadscale serve` subprocess with its own data directory."""

    def __init__(self, timeout: float) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="attack-memory-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.timeout = timeout
        t = f"{timeout:g}s"
        config = {
            "server_url": self.url,
            "listen_addr": f"127.0.0.1:{self.port}",
            "metrics_listen_addr": "",
            "unix_socket": "pyheadscale.sock",
            "derp": {"server": {"enabled": False}, "urls": [], "auto_update_enabled": False},
            "log": {"level": "warning"},
            "limits": {"connections": {"header_timeout": t, "request_timeout": t, "idle_timeout": t}},
        }
        self.config = self.dir / "config.yaml"
        self.config.write_text(json.dumps(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.auth_key = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyheadscale", "-c", str(self.config), "serve"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "server.log", "wb"),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.2)
        raise RuntimeError(f"server did not start; see {self.dir / 'server.log'}")

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "pyheadscale", "-c", str(self.config), "-o", "json", *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout

    def preauth_key(self) -> str:
        self.cli("users", "create", "bench")
        created = json.loads(self.cli("preauthkeys", "create", "-u", "bench", "--reusable", "-e", "1h"))
        return str(created["key"])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()


Attack = Callable[[Server, float, dict[str, Any]], Awaitable[None]]


async def connect(
    server: Server, server_key: MachinePublic, source: str | None = None
) -> ControlClient | None:
    client = ControlClient(server.url, MachinePrivate.generate(), local_host=source)
    try:
        await asyncio.wait_for(client.connect(server_key), 10)
        return client
    except (ControlClientError, OSError, TimeoutError, asyncio.IncompleteReadError):
        await client.close()
        return None


async def until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def audit_flood(server: Server, seconds: float, notes: dict[str, Any]) -> None:
    key = await fetch_server_key(server.url)
    deadline = time.monotonic() + seconds
    counts = {"refused": 0, "rate_limited": 0, "bad_request": 0}

    async def one_connection() -> None:
        client = await connect(server, key)
        if client is None:
            return
        try:
            while time.monotonic() < deadline:
                for hostname in ("h" * 256, "h" * MiB):
                    body = {
                        "NodeKey": NodePrivate.generate().public().text,
                        "Auth": {"AuthKey": BAD_KEY},
                        "Hostinfo": {"Hostname": hostname},
                    }
                    status, _ = await client.request("POST", "/machine/register", body)
                    counts[
                        "refused" if status == 200 else "rate_limited" if status == 429 else "bad_request"
                    ] += 1
                    if status == 429:
                        await asyncio.sleep(0.2)
        finally:
            await client.close()

    await asyncio.gather(*(one_connection() for _ in range(8)))
    notes.update(counts)
    log = server.dir / "audit.log"
    notes["audit_log_bytes"] = log.stat().st_size if log.exists() else 0


async def login_flood(server: Server, seconds: float, notes: dict[str, Any]) -> None:
    """Logins from 200 loopback sources (127.0.1.x), each as many as it is let; then one real login from
    a fresh source must still get its AuthURL."""
    key = await fetch_server_key(server.url)
    deadline = time.monotonic() + seconds
    counts = {"auth_urls": 0, "refused": 0, "no_connection": 0}
    clients: list[ControlClient] = []

    async def flood(source: str) -> None:
        while time.monotonic() < deadline:
            client = await connect(server, key, source)
            if client is None:
                counts["no_connection"] += 1
                await asyncio.sleep(0.5)
                continue
            clients.append(client)
            try:
                answer = await client.register(NodePrivate.generate(), hostname="flood")
                counts["auth_urls" if answer.get("AuthURL") else "refused"] += 1
            except ControlClientError:
                counts["refused"] += 1
                await asyncio.sleep(0.5)

    await asyncio.gather(*(flood(f"127.0.1.{i}") for i in range(1, 201)))
    real = await connect(server, key, "127.0.0.2")
    answer = await real.register(NodePrivate.generate(), hostname="laptop") if real else {}
    notes.update(counts, real_login_got_url=bool(answer.get("AuthURL")))
    for client in [*clients, *([real] if real else [])]:
        await client.close()


async def h2_bodies(server: Server, seconds: float, notes: dict[str, Any]) -> None:
    key = await fetch_server_key(server.url)
    deadline = time.monotonic() + seconds
    clients: list[ControlClient] = []
    sent = 0
    chunk = b"x" * 16384
    while time.monotonic() < deadline and len(clients) < 200:
        client = await connect(server, key)
        if client is None:
            await asyncio.sleep(0.1)
            continue
        clients.append(client)
        h2conn: Any = client._h2
        for _ in range(64):
            stream_id = send_request_headers(client)
            window = min(h2conn.local_flow_control_window(stream_id), len(chunk))
            if window > 0:
                h2conn.send_data(stream_id, chunk[:window])
                sent += window
        with contextlib.suppress(Exception):
            await client._flush()
    # Keep pushing whatever credit the server grants until the time is up.
    while time.monotonic() < deadline:
        for client in clients:
            h2conn = client._h2
            for stream_id, stream in list(client._streams.items()):
                if stream.reset:
                    continue
                with contextlib.suppress(Exception):
                    window = min(h2conn.local_flow_control_window(stream_id), len(chunk))
                    if window > 0:
                        h2conn.send_data(stream_id, chunk[:window])
                        sent += window
            with contextlib.suppress(Exception):
                await client._flush()
        await asyncio.sleep(0.05)
    notes.update(connections=len(clients), body_bytes_sent=sent, would_pin_before=f"{len(clients) * 64} MiB")
    for client in clients:
        await client.close()


async def idle_sockets(server: Server, seconds: float, notes: dict[str, Any]) -> None:
    deadline = time.monotonic() + seconds
    held: list[asyncio.StreamWriter] = []
    opened = 0
    while time.monotonic() < deadline and opened < 5000:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        opened += 1
        if opened % 2:
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        held.append(writer)
        if opened % 100 == 0:
            await asyncio.sleep(0)
    await until(deadline)
    notes.update(opened=opened)
    for writer in held:
        writer.close()


async def handshakes(server: Server, seconds: float, notes: dict[str, Any]) -> None:
    key = await fetch_server_key(server.url)
    deadline = time.monotonic() + seconds
    counts = {"accepted": 0, "refused": 0}

    async def worker() -> None:
        while time.monotonic() < deadline:
            client = await connect(server, key)
            counts["accepted" if client is not None else "refused"] += 1
            if client is not None:
                await client.close()

    await asyncio.gather(*(worker() for _ in range(8)))
    notes.update(counts)


async def registered_nodes(
    server: Server, auth_key: str, count: int
) -> list[tuple[ControlClient, NodePrivate]]:
    nodes = []
    key = await fetch_server_key(server.url)
    for i in range(count):
        client = await connect(server, key)
        if client is None:
            await asyncio.sleep(0.5)
            continue
        node_key = NodePrivate.generate()
        while True:  # as tailscaled does, back off while the registration rate limit says so
            try:
                await client.register(node_key, auth_key=auth_key, hostname=f"peer-{i}")
                break
            except ControlClientError as exc:
                if "429" not in str(exc):
                    raise
                await asyncio.sleep(1)
        nodes.append((client, node_key))
    return nodes


async def drain(client: ControlClient, node_key: NodePrivate, counter: list[int]) -> None:
    with contextlib.suppress(Exception):
        async for message in client.map_stream(node_key):
            counter[0] += len(json.dumps(message))


async def hostinfo_push(server: Server, seconds: float, notes: dict[str, Any]) -> None:
    nodes = await registered_nodes(server, server.auth_key, 11)
    received = [0]
    readers = [asyncio.ensure_future(drain(c, k, received)) for c, k in nodes[1:]]
    sender, sender_key = nodes[0]
    deadline = time.monotonic() + seconds
    sent = refused = 0
    big = {"Hostname": "pusher", "OS": "linux", "RoutableIPs": [], "Junk": "x" * (512 << 10)}
    while time.monotonic() < deadline:
        big["OSVersion"] = str(sent)  # a change every time
        big["sshHostKeys"] = ["ssh-ed25519 " + "A" * 3000] * 4
        body = {
            "Version": sender.capver,
            "NodeKey": sender_key.public().text,
            "Stream": False,
            "OmitPeers": True,
            "Hostinfo": big,
        }
        status, _ = await sender.request("POST", "/machine/map", body)
        sent += status == 200
        refused += status != 200
        await asyncio.sleep(0.02)
    await asyncio.sleep(1)
    notes.update(
        updates=sent,
        refused=refused,
        bytes_to_peers=received[0],
        per_update_per_peer=received[0] // max(1, sent * 10),
    )
    for reader in readers:
        reader.cancel()
    for client, _ in nodes:
        await client.close()


async def idle_maps(server: Server, seconds: float, notes: dict[str, Any]) -> None:
    count = 100
    before = sample(server.pid)
    nodes = await registered_nodes(server, server.auth_key, count)
    counter = [0]
    readers = [asyncio.ensure_future(drain(c, k, counter)) for c, k in nodes]
    await asyncio.sleep(seconds)
    during = sample(server.pid)
    notes.update(streams=len(nodes), rss_per_stream=(during.rss - before.rss) // max(1, len(nodes)))
    for reader in readers:
        reader.cancel()
    for client, _ in nodes:
        await client.close()


ATTACKS: dict[str, Attack] = {
    "audit-flood": audit_flood,
    "login-flood": login_flood,
    "h2-bodies": h2_bodies,
    "idle-sockets": idle_sockets,
    "handshakes": handshakes,
    "hostinfo-push": hostinfo_push,
    "idle-maps": idle_maps,
}


async def measure(server: Server, name: str, attack: Attack, seconds: float) -> Row:
    before = sample(server.pid)
    peak = Sample(before.rss, before.fds)
    notes: dict[str, Any] = {}
    running = asyncio.ensure_future(attack(server, seconds, notes))
    while not running.done():
        now = sample(server.pid)
        peak = Sample(max(peak.rss, now.rss), max(peak.fds, now.fds))
        await asyncio.sleep(0.2)
    running.result()
    # Long enough for every server timeout to fire on what the attack left behind.
    await asyncio.sleep(server.timeout * 2 + 1)
    return Row(name, before, peak, sample(server.pid), notes)


def mb(value: int) -> str:
    return f"{value / MiB:7.1f}"


def print_table(rows: list[Row]) -> None:
    head = f"{'attack':<14} {'RSS MiB before':>14} {'peak':>7} {'after':>7}"
    print(f"{head} | {'fds before':>10} {'peak':>5} {'after':>5} | notes")
    for row in rows:
        notes = ", ".join(f"{k}={v}" for k, v in row.notes.items())
        print(
            f"{row.attack:<14} {mb(row.before.rss):>14} {mb(row.peak.rss)} {mb(row.after.rss)} | "
            f"{row.before.fds:>10} {row.peak.fds:>5} {row.after.fds:>5} | {notes}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each attack runs")
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="the server's header/request/idle timeouts"
    )
    parser.add_argument("--attack", action="append", choices=sorted(ATTACKS), help="run only these")
    args = parser.parse_args()
    raise_fd_limit()
    server = Server(args.timeout)
    server.start()
    rows = []
    try:
        server.auth_key = server.preauth_key()
        for name in args.attack or list(ATTACKS):
            rows.append(await measure(server, name, ATTACKS[name], args.seconds))
            print(f"{name}: done", flush=True)
    finally:
        server.stop()
    print()
    print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
