"""The official tailscaled and tailscale CLI on a lab host, run the way users run them.

Each `Tailscaled` is one daemon in one namespace of a `topology.Lab`, with a kernel TUN (`--tun=tailscale0`)
and its own --state, --socket and --statedir under the driver's work directory. It is configured only through
the CLI (`tailscale up`, `set`, `logout`, ...) over its socket, and observed only through what the CLI shows
(`tailscale status --json`, `tailscale ping`) and through real traffic, so a scenario sees what a user sees.

The daemon's environment keeps it inside the lab: no log uploads, no port mapping, plain-HTTP DERP (the lab's
relay has no certificate), and nothing else set by the caller leaks in. Both binaries come from
tests/refbin.py; the driver gets their paths on its command line.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path
from typing import Any

from tests.e2e.topology import Host
from tests.processes import stop_process

DAEMON_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/nonexistent",
    "TS_NO_LOGS_NO_SUPPORT": "true",
    "TS_DISABLE_PORTMAPPER": "1",
    "TS_DEBUG_USE_DERP_HTTP": "1",
    "TS_LOGS_DIR": "",
}
"""The whole environment of a daemon (plus TS_LOGS_DIR set per daemon and any per-scenario extras)."""

PING_VIA = re.compile(r"pong from (?P<name>\S+) \((?P<ip>[^),]+)[^)]*\) via (?P<via>\S+) in ")


class Tailscaled:
    """One tailscaled (and its CLI) on `host`, with its files under `workdir/<name>`."""

    def __init__(
        self,
        host: Host,
        name: str,
        workdir: Path,
        *,
        tailscaled: Path,
        tailscale: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.host, self.name = host, name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "tailscaled.sock"
        self.log_path = self.dir / "tailscaled.log"
        self.tailscaled, self.tailscale = tailscaled, tailscale
        self.env = dict(DAEMON_ENV, TS_LOGS_DIR=str(self.dir / "logs"), **(extra_env or {}))
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, limit: float = 60) -> None:
        """Start the daemon and wait until its CLI socket answers."""
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.host.argv(
                    [
                        str(self.tailscaled),
                        "--tun=tailscale0",
                        f"--state={self.dir / 'tailscaled.state'}",
                        f"--statedir={self.dir / 'state'}",
                        f"--socket={self.socket}",
                        "--no-logs-no-support",
                        "--verbose=2",
                    ]
                ),
                stdout=log,
                stderr=log,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(f"tailscaled {self.name} exited {self.proc.returncode}: {self.log_tail()}")
            if self.socket.exists():
                status, _, _ = await self.cli("status", "--json", limit=10)
                if status in (0, 1):  # 1: "Logged out." / NeedsLogin, still an answering daemon
                    return
            await asyncio.sleep(0.3)
        raise RuntimeError(f"tailscaled {self.name} socket never answered: {self.log_tail()}")

    async def cli(self, *args: str, limit: float = 60) -> tuple[int, str, str]:
        """`tailscale --socket=... args` inside the host: (exit status, stdout, stderr)."""
        return await self.host.arun(
            [str(self.tailscale), f"--socket={self.socket}", *args], limit=limit, env=self.env
        )

    async def cli_ok(self, *args: str, limit: float = 60) -> str:
        status, out, err = await self.cli(*args, limit=limit)
        if status != 0:
            raise RuntimeError(
                f"[{self.name}] tailscale {' '.join(args)} exited {status}: {err.strip()}{out}"
            )
        return out

    async def cli_spawn(self, *args: str) -> asyncio.subprocess.Process:
        """`tailscale args` left running (an interactive `up` that waits for approval); output on pipes."""
        return await asyncio.create_subprocess_exec(
            *self.host.argv([str(self.tailscale), f"--socket={self.socket}", *args]),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
        )

    async def up(self, login_server: str, *flags: str, auth_key: str | None = None, limit: float = 90) -> str:
        """`tailscale up` against pyheadscale, --hostname=<name>; DNS stays off unless a flag turns it on."""
        args = ["up", f"--login-server={login_server}", f"--hostname={self.name}"]
        if auth_key is not None:
            args.append(f"--authkey={auth_key}")
        if not any(flag.startswith("--accept-dns") for flag in flags):
            args.append("--accept-dns=false")
        return await self.cli_ok(*args, *flags, limit=limit)

    async def status(self) -> dict[str, Any]:
        """`tailscale status --json` (it exits non-zero when not Running, but still prints the JSON)."""
        _, out, err = await self.cli("status", "--json", limit=30)
        try:
            value: dict[str, Any] = json.loads(out)
        except ValueError:
            raise RuntimeError(f"[{self.name}] tailscale status --json: {out!r} {err!r}") from None
        return value

    async def ip(self) -> str:
        return str((await self.status())["Self"]["TailscaleIPs"][0])

    async def peer(self, hostname: str) -> dict[str, Any] | None:
        """This node's view of the peer called `hostname` (None when it is not a peer)."""
        for peer in ((await self.status()).get("Peer") or {}).values():
            if peer.get("HostName") == hostname:
                return dict(peer)
        return None

    async def ping(self, target: str, *flags: str, count: int = 10, limit: float = 120) -> dict[str, Any]:
        """`tailscale ping -c N` (stops at the first direct pong): exit status, output, and the paths seen."""
        status, out, err = await self.cli("ping", f"-c={count}", "--timeout=5s", *flags, target, limit=limit)
        return {
            "exit": status,
            "output": (out + err)[-3000:],
            "via": [m.group("via") for m in PING_VIA.finditer(out)],
        }

    async def wait_for(self, predicate: Any, limit: float = 60, interval: float = 0.5) -> dict[str, Any]:
        """Poll `tailscale status --json` until `predicate(status)` holds; the last status either way."""
        deadline = time.monotonic() + limit
        while True:
            status = await self.status()
            if predicate(status) or time.monotonic() > deadline:
                return status
            await asyncio.sleep(interval)

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    async def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (tailscaled then tidies its routes and TUN), or SIGKILL: a machine losing power."""
        await stop_process(self.proc, 15, sig=signal.SIGKILL if kill else signal.SIGTERM)
