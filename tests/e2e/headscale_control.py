"""Real Headscale v0.29.2 as the lab's control server, in place of pyheadscale (`--control headscale`).

The tailscaled lab (tailscaled_driver.py) runs the same scenarios against either server. This module starts
`headscale -c config.yaml serve` on the control host with the config an operator would write for the lab
(the same server_url, policy file, base_domain, split DNS and extra record; its embedded DERP relay with
STUN on the control host; no public DERP map, no log uploads, no update checks), makes users and keys with
Headscale's own CLI, and gives the scenarios the two things they read from pyheadscale's `Server`:

* `store`: the nodes as the server keeps them, read from Headscale's SQLite database (read-only, on each
  look, so a scenario's synchronous `run.node(...)` sees what Headscale last wrote), with the attributes the
  scenarios use of pyheadscale's `Node`;
* `derp`: Headscale publishes no counters for its embedded relay, so `stats()` says so instead of counting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.headscale_config import headscale_config
from tests.processes import stop_process

HEADSCALE_VERSION = "v0.29.2"


@dataclasses.dataclass
class HeadscaleNode:
    """One row of Headscale's `nodes` table, named as pyheadscale's Node attributes the scenarios read."""

    id: int
    hostname: str
    ipv4: str
    user_id: int | None
    tags: list[str]
    endpoints: list[str]
    approved_routes: list[str]
    announced_routes: list[str]
    home_derp: int
    register_method: str
    ephemeral: bool
    expiry: datetime.datetime | None


def _json_list(text: str | None) -> list[Any]:
    value = json.loads(text) if text else None
    return list(value) if isinstance(value, list) else []


def _timestamp(text: str | None) -> datetime.datetime | None:
    """A Headscale datetime column (`2026-12-01 09:33:33.682360624+00:00`, nanoseconds), timezone-aware."""
    if not text or text.startswith("0001-01-01"):
        return None
    date, _, rest = text.partition(" ")
    clock, sign, zone = rest.partition("+") if "+" in rest else rest.rpartition("-")
    whole, _, fraction = clock.partition(".")
    iso = f"{date}T{whole}.{(fraction + '000000')[:6]}{sign or '+'}{zone or '00:00'}"
    return datetime.datetime.fromisoformat(iso)


class HeadscaleStore:
    """Headscale's nodes, read from its database on every access."""

    def __init__(self, database: Path) -> None:
        self.database = database

    @property
    def nodes(self) -> dict[int, HeadscaleNode]:
        if not self.database.exists():
            return {}
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT n.*, k.ephemeral AS key_ephemeral FROM nodes n"
                " LEFT JOIN pre_auth_keys k ON k.id = n.auth_key_id WHERE n.deleted_at IS NULL"
            ).fetchall()
        nodes = {}
        for row in rows:
            host_info = json.loads(row["host_info"] or "{}")
            nodes[row["id"]] = HeadscaleNode(
                id=row["id"],
                hostname=row["hostname"],
                ipv4=row["ipv4"],
                user_id=row["user_id"],
                tags=_json_list(row["tags"]),
                endpoints=_json_list(row["endpoints"]),
                approved_routes=_json_list(row["approved_routes"]),
                announced_routes=list(host_info.get("RoutableIPs") or []),
                home_derp=int((host_info.get("NetInfo") or {}).get("PreferredDERP") or 0),
                register_method=row["register_method"],
                ephemeral=bool(row["key_ephemeral"]),
                expiry=_timestamp(row["expiry"]),
            )
        return nodes

    @staticmethod
    def is_expired(node: HeadscaleNode) -> bool:
        return node.expiry is not None and node.expiry <= datetime.datetime.now(datetime.UTC)


class NoRelayCounters:
    """Headscale's embedded DERP relay: it publishes no packet counters."""

    @staticmethod
    def stats() -> dict[str, Any]:
        return {"unavailable": f"Headscale {HEADSCALE_VERSION} publishes no DERP relay counters"}


def write_headscale_config(
    workdir: Path,
    *,
    server_url: str,
    listen_addr: str,
    control_address: str,
    policy: Path,
    dns: dict[str, Any],
    ephemeral_timeout: str,
) -> Path:
    """Headscale's config.yaml for the lab, equivalent to what tailscaled_driver.server_config gives ours."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = headscale_config(
        workdir,
        server_url=server_url,
        listen_addr=listen_addr,
        metrics_listen_addr="127.0.0.1:9090",
        grpc_listen_addr="127.0.0.1:50443",
        stun_listen_addr=f"{control_address}:3478",
        derp_ipv4=control_address,
        node={"ephemeral": {"inactivity_timeout": ephemeral_timeout}},
        database={"type": "sqlite", "sqlite": {"path": str(workdir / "db.sqlite"), "write_ahead_log": True}},
        log={"level": "debug", "format": "text"},
        policy={"mode": "file", "path": str(policy)},
        dns=dns,
    )
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class HeadscaleServer:
    """`headscale serve` on the control host, with what the scenarios read of a pyheadscale `Server`."""

    def __init__(self, binary: Path, config: Path, health_url: str) -> None:
        self.binary, self.config, self.health_url = binary, config, health_url
        self.workdir = config.parent
        self.store = HeadscaleStore(self.workdir / "db.sqlite")
        self.derp = NoRelayCounters()
        self.log_path = self.workdir / "headscale.log"
        self.proc: asyncio.subprocess.Process | None = None

    def cli_argv(self) -> list[str]:
        """The operator CLI, as `Run.pyheadscale` runs it (subcommands and flags are Headscale's own)."""
        return [str(self.binary), "-c", str(self.config), "--force"]

    async def cli(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.cli_argv(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode != 0:
            raise RuntimeError(
                f"headscale {' '.join(args)} exited {proc.returncode}: {err.decode()}{out.decode()}"
            )
        return out.decode()

    async def start(self, limit: float = 60) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(self.binary), "-c", str(self.config), "serve", stdout=log, stderr=log
            )
        deadline = time.monotonic() + limit
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"headscale exited {self.proc.returncode}: {self.log_tail()}")
                try:
                    async with session.get(self.health_url, timeout=aiohttp.ClientTimeout(total=2)) as reply:
                        if reply.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.3)
        raise RuntimeError(f"headscale never answered {self.health_url}: {self.log_tail()}")

    async def create_user(self, name: str) -> int:
        await self.cli("users", "create", name)
        users = json.loads(await self.cli("users", "list", "-o", "json"))
        return int(next(u["id"] for u in users if u["name"] == name))

    async def create_preauth_key(self, user_id: int | None, *flags: str) -> str:
        """`headscale preauthkeys create` (for a user, or tagged with `--tags` and no user): the key text."""
        user = ["--user", str(user_id)] if user_id is not None else []
        made = json.loads(
            await self.cli("preauthkeys", "create", *user, "--expiration", "2h", *flags, "-o", "json")
        )
        return str(made["key"])

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    async def stop(self) -> None:
        await stop_process(self.proc, 15)
