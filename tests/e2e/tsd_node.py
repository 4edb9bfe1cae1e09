"""One official tailscaled (userspace networking) plus its `tailscale` CLI, for drivers that run several of
them in one loopback-only namespace (see netns.py).

Userspace networking keeps each daemon's tailnet addresses inside its own netstack, so several daemons can
share one namespace without fighting over routes; WireGuard still runs over real UDP sockets on loopback
and the DERP relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from tests.e2e.netns import CLIENT_ENV
from tests.processes import stop_process


class CLIError(Exception):
    pass


class TailscaledNode:
    def __init__(self, workdir: Path, name: str, tailscaled: Path, tailscale: Path) -> None:
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "tailscaled.sock"
        self.log_path = self.dir / "tailscaled.log"
        self.tailscaled, self.tailscale = tailscaled, tailscale
        self.proc: asyncio.subprocess.Process | None = None
        self.env = dict(os.environ, **CLIENT_ENV, HOME=str(self.dir))

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            str(self.tailscaled),
            "--tun=userspace-networking",
            f"--statedir={self.dir / 'state'}",
            f"--socket={self.socket}",
            "--port=0",
            stdout=log,
            stderr=log,
            env=self.env,
        )
        log.close()
        for _ in range(100):
            if self.socket.exists():
                return
            await asyncio.sleep(0.1)
        raise CLIError(f"{self.name}: tailscaled did not create its socket")

    async def cli(self, *args: str, limit: float = 60, check: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(self.tailscale),
            f"--socket={self.socket}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CLIError(f"{self.name}: tailscale {' '.join(args)} timed out after {limit}s") from None
        if check and proc.returncode != 0:
            raise CLIError(
                f"{self.name}: tailscale {' '.join(args)} exited {proc.returncode}: {err.decode()}"
            )
        return out.decode() + err.decode()

    async def start_cli(self, *args: str) -> asyncio.subprocess.Process:
        """A CLI command left running (an interactive `up` waits for its login), output piped."""
        return await asyncio.create_subprocess_exec(
            str(self.tailscale),
            f"--socket={self.socket}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )

    async def up(self, login_server: str, *extra: str, auth_key: str | None = None, limit: float = 90) -> str:
        args = ["up", f"--login-server={login_server}", f"--hostname={self.name}", "--reset", *extra]
        if auth_key is not None:
            args.append(f"--auth-key={auth_key}")
        return await self.cli(*args, limit=limit)

    async def status(self) -> dict[str, Any]:
        return dict(json.loads(await self.cli("status", "--json")))

    async def wait_for_peer(self, hostname: str, limit: float = 60) -> dict[str, Any]:
        """The peer's status entry once the daemon lists it online."""
        deadline = asyncio.get_running_loop().time() + limit
        while asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(CLIError, ValueError):
                for peer in ((await self.status()).get("Peer") or {}).values():
                    if peer.get("HostName") == hostname and peer.get("Online"):
                        return dict(peer)
            await asyncio.sleep(0.5)
        raise CLIError(f"{self.name}: peer {hostname} never came online")

    async def pings(self, address: str) -> bool:
        """Whether a disco ping to `address` is answered (up to 20 tries; `tailscale ping` fails on none)."""
        out = await self.cli("ping", "--c=20", address, limit=300, check=False)
        return "pong from" in out

    async def stop(self) -> None:
        await stop_process(self.proc)

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""
