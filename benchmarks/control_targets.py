"""The servers `benchmarks/control_scale.py` measures, and the tailnets it builds on them.

A target is one server process on a loopback port with its own temporary directory: pyheadscale
(`python -m pyheadscale -c cfg serve`) or Headscale v0.29.2 (the binary `tests/refbin.py` builds), each made
users and reusable preauth keys through its own CLI, and each restartable on the same database for the storm.
A tailnet layout says who owns node i, which policy applies, and whom a probe reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.headscale_config import headscale_config
from tests.ports import free_port

SEGMENT_SIZE = 100
CLI_CALLS_AT_ONCE = 4
# `serve` as the CLI runs it (uvloop, the collector settings), with a keep-alive interval of the benchmark's.
KEEPALIVE_LAUNCH = "; ".join(
    [
        "import asyncio, sys, uvloop",
        "from pyheadscale.app import serve_forever",
        "from pyheadscale.config import load_config",
        "uvloop.install()",
        "asyncio.run(serve_forever(load_config(sys.argv[1])[0], keepalive=float(sys.argv[2])))",
    ]
)
# The groups-and-tags policy (`--policy roles`): node i is owned by ROLES[i % 5]; "server" nodes are tagged.
ROLES = ("alice", "bob", "carol", "dave", "server")
ROLES_POLICY = {
    "groups": {"group:eng": ["alice@", "bob@"], "group:ops": ["carol@"]},
    "tagOwners": {"tag:server": ["group:ops"]},
    "acls": [
        {"action": "accept", "src": ["group:eng"], "dst": ["group:eng:*", "tag:server:443"]},
        {"action": "accept", "src": ["group:ops"], "dst": ["tag:server:22"]},
        {"action": "accept", "src": ["tag:server"], "dst": ["tag:server:*"]},
    ],
}


def rss_bytes(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", text, re.M)
    return int(match.group(1)) * 1024 if match else 0


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (this network namespace)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()]
    names, values = (row for row in lines if row[0] == "TcpExt:")
    return int(values[names.index("ListenOverflows")])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Layout:
    """Who owns each node, the policy, and who sees what.

    Owners are user names; "server" means a key of carol's tagged tag:server. `peers_of(i)` is how many
    peers node i's full map holds (None where the layout does not say), `probe_owner` whose probes are.
    """

    name: str
    n: int
    users: tuple[str, ...]
    policy: dict[str, Any] | None
    probe_owner: str

    def owner(self, i: int) -> str:
        if self.name == "roles":
            return ROLES[i % len(ROLES)]
        if self.name == "segmented":
            return f"seg{i // SEGMENT_SIZE}"
        return "alice"

    def sees_probe(self, i: int) -> bool:
        if self.name == "roles":
            return self.owner(i) in {"alice", "bob", "server"}
        return self.owner(i) == self.probe_owner

    def peers_of(self, i: int, probes: int) -> int | None:
        if self.name == "allow-all":
            return self.n - 1 + probes
        if self.name == "segmented":
            start = i // SEGMENT_SIZE * SEGMENT_SIZE
            return min(self.n, start + SEGMENT_SIZE) - start - 1 + (probes if self.owner(i) == "seg0" else 0)
        return None


def layout(name: str, n: int) -> Layout:
    if name == "roles":
        return Layout(name, n, ("alice", "bob", "carol", "dave"), ROLES_POLICY, "alice")
    if name == "segmented":
        users = tuple(f"seg{k}" for k in range((n + SEGMENT_SIZE - 1) // SEGMENT_SIZE))
        acls = [{"action": "accept", "src": [f"{u}@"], "dst": [f"{u}@:*"]} for u in users]
        return Layout(name, n, users, {"acls": acls}, "seg0")
    return Layout("allow-all", n, ("alice",), None, "alice")


class Target:
    """A server process, configured in `workdir`; subclasses say how to start it and talk to its CLI."""

    name = ""

    def __init__(self, workdir: Path, tailnet: Layout) -> None:
        self.workdir = workdir
        self.layout = tailnet
        self.port = free_port()
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "config.yaml"
        if tailnet.policy is not None:
            (workdir / "policy.json").write_text(json.dumps(tailnet.policy))
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def cli_command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait_ready(self, within: float = 120.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.workdir / 'server.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if b"pass" in await self.http_get(self.port, "/health"):
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} did not become ready")

    async def http_get(self, port: int, path: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            raw = await reader.read()
        finally:
            writer.close()
        return raw.partition(b"\r\n\r\n")[2]

    async def map_metrics(self) -> tuple[float, float] | None:
        """(map bytes, map messages but keep-alives) sent so far, where the server counts them."""
        return None

    async def keepalives_sent(self) -> float | None:
        """Keep-alive messages sent so far, where the server counts them."""
        return None

    def cli(self, *args: str) -> Any:
        out = subprocess.run(
            [*self.cli_command(), "-o", "json", *args], check=True, capture_output=True, timeout=60
        )
        return json.loads(out.stdout)

    def auth_keys(self) -> dict[str, str]:
        """A reusable preauth key per owner in the layout.

        The CLI calls run a few at a time: a segmented tailnet of 10,000 has 100 owners, and one call after
        another spent minutes starting the CLI.
        """
        with ThreadPoolExecutor(CLI_CALLS_AT_ONCE) as pool:
            keys = dict(zip(self.layout.users, pool.map(self.user_key, self.layout.users), strict=True))
        if self.layout.name == "roles":
            keys["server"] = self.tagged_key("tag:server")
        return keys

    def user_key(self, name: str) -> str:
        """Create user `name` and a reusable preauth key of theirs."""
        raise NotImplementedError

    def tagged_key(self, tag: str) -> str:
        """A reusable preauth key whose nodes are tagged `tag`."""
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Pyheadscale(Target):
    """pyheadscale `serve`; with `keepalive`, the same server with a keep-alive interval that short, so what a
    keep-alive costs is measured in seconds rather than over minutes of 50-second intervals."""

    name = "pyheadscale"

    def __init__(self, workdir: Path, tailnet: Layout, keepalive: float | None = None) -> None:
        super().__init__(workdir, tailnet)
        self.keepalive = keepalive
        config: dict[str, Any] = {
            "server_url": self.url,
            "listen_addr": f"127.0.0.1:{self.port}",
            "metrics_listen_addr": f"127.0.0.1:{self.metrics_port}",
            "unix_socket": str(workdir / "pyheadscale.sock"),
            "derp": {"server": {"enabled": False}, "urls": [], "paths": []},
            "database": {"type": "sqlite", "sqlite": {"path": str(workdir / "db.sqlite")}},
            "noise": {"private_key_path": str(workdir / "noise.key")},
            "log": {"level": "warning"},
            # Every simulated node comes from 127.0.0.1: the per-address limits would hold a real tailnet's
            # nodes to one address's share, so they are lifted. The total stays at its default (8,192) up to
            # 4,000 nodes; past that it is raised as an operator of such a tailnet would (a node holds one
            # TS2021 connection, and during a storm its old one may not have closed yet).
            "limits": {
                "connections": {"per_source": 1_000_000, "max": max(8192, 2 * tailnet.n + 256)},
                "rate": {
                    "handshakes": {"per_second": 1_000_000, "burst": 1_000_000},
                    "registrations": {"per_second": 1_000_000, "burst": 1_000_000},
                },
            },
        }
        if tailnet.policy is not None:
            config["policy"] = {"mode": "file", "path": str(workdir / "policy.json")}
        self.config_path.write_text(json.dumps(config))  # JSON is YAML

    def command(self) -> list[str]:
        if self.keepalive is not None:
            return [sys.executable, "-c", KEEPALIVE_LAUNCH, str(self.config_path), str(self.keepalive)]
        return [sys.executable, "-m", "pyheadscale", "-c", str(self.config_path), "serve"]

    def cli_command(self) -> list[str]:
        return [sys.executable, "-m", "pyheadscale", "-c", str(self.config_path)]

    async def map_metrics(self) -> tuple[float, float] | None:
        text = (await self.http_get(self.metrics_port, "/metrics")).decode()
        total_bytes = sum(float(v) for v in re.findall(r"^pyheadscale_map_bytes_total (\S+)$", text, re.M))
        # Keep-alives are left out: with thousands of streams open one goes out every few milliseconds, and
        # `settle` would never see the server quiet.
        counted = re.findall(
            r'^pyheadscale_map_messages_total\{kind="(?!keepalive)[^"]*"\} (\S+)$', text, re.M
        )
        return total_bytes, sum(float(v) for v in counted)

    async def keepalives_sent(self) -> float | None:
        text = (await self.http_get(self.metrics_port, "/metrics")).decode()
        sent = re.search(r'^pyheadscale_map_messages_total\{kind="keepalive"\} (\S+)$', text, re.M)
        return float(sent.group(1)) if sent else 0.0

    def user_key(self, name: str) -> str:
        self.cli("users", "create", name)
        return str(self.cli("preauthkeys", "create", "-u", name, "--reusable", "-e", "24h")["key"])

    def tagged_key(self, tag: str) -> str:
        # The layout's tagged servers are carol's (see Layout).
        return str(
            self.cli("preauthkeys", "create", "-u", "carol", "--reusable", "-e", "24h", "--tags", tag)["key"]
        )


class Headscale(Target):
    """Headscale v0.29.2 on loopback: embedded DERP on (it wants a DERP map), STUN on a loopback port."""

    name = "headscale"

    def __init__(self, workdir: Path, tailnet: Layout, binary: Path) -> None:
        super().__init__(workdir, tailnet)
        self.binary = binary
        config = headscale_config(
            workdir,
            server_url=self.url,
            listen_addr=f"127.0.0.1:{self.port}",
            metrics_listen_addr=f"127.0.0.1:{self.metrics_port}",
            grpc_listen_addr=f"127.0.0.1:{free_port()}",
            stun_listen_addr=f"127.0.0.1:{free_port()}",
            log={"level": "warn", "format": "text"},
            policy={"mode": "file", "path": str(workdir / "policy.json") if tailnet.policy else ""},
        )
        self.config_path.write_text(json.dumps(config))

    def command(self) -> list[str]:
        return [str(self.binary), "-c", str(self.config_path), "serve"]

    def cli_command(self) -> list[str]:
        return [str(self.binary), "-c", str(self.config_path)]

    def user_key(self, name: str) -> str:
        user_id = str(self.cli("users", "create", name)["id"])
        return str(self.cli("preauthkeys", "create", "-u", user_id, "--reusable", "-e", "24h")["key"])

    def tagged_key(self, tag: str) -> str:
        return str(self.cli("preauthkeys", "create", "--reusable", "-e", "24h", "--tags", tag)["key"])
