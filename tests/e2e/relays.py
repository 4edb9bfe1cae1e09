"""Standalone DERP relays (`python -m derp`) for real-client scenarios, run as an operator would run them."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.processes import stop_process

STARTUP_TIMEOUT = 20.0


class StandaloneRelay:
    """One `python -m derp` process serving plain-HTTP DERP on host:port and STUN on host:stun_port.

    Its counters come from the "final stats" JSON line it logs when stopped: they are cumulative, so they say
    what the relay carried over the whole scenario without adding a stats endpoint to the relay.
    """

    def __init__(
        self,
        workdir: Path,
        name: str,
        host: str,
        port: int,
        stun_port: int,
        *,
        mesh_psk_file: Path | None = None,
        mesh_with: Sequence[str] = (),
    ) -> None:
        self.name, self.host, self.port, self.stun_port = name, host, port, stun_port
        self.url = f"http://{host}:{port}/derp"
        self.log_path = workdir / f"{name}.log"
        self.args = [
            "-a",
            f"{host}:{port}",
            "-c",
            str(workdir / f"{name}.json"),
            "--stun-port",
            str(stun_port),
            "--http-port",
            "-1",
        ]
        if mesh_psk_file is not None:
            self.args += ["--mesh-psk-file", str(mesh_psk_file), "--mesh-with", ",".join(mesh_with)]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "derp", *self.args, stdout=log, stderr=log
            )
        await self.wait_for_log("serving DERP on")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    async def wait_for_log(self, text: str) -> None:
        """Wait until the relay logs `text` (startup, a mesh link coming up), failing early if it exits."""
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while text not in self.log_text():
                if self.proc is not None and self.proc.returncode is not None:
                    raise RuntimeError(f"relay {self.name} exited: {self.log_text()[-2000:]}")
                await asyncio.sleep(0.1)

    def derp_node(self, region_id: int, suffix: str) -> dict[str, Any]:
        """This relay as a tailcfg.DERPNode: plain HTTP, so only for clients with TS_DEBUG_USE_DERP_HTTP."""
        return {
            "Name": f"{region_id}{suffix}",
            "RegionID": region_id,
            "HostName": self.host,
            "IPv4": self.host,
            "DERPPort": self.port,
            "STUNPort": self.stun_port,
            "InsecureForTests": True,
        }

    async def stop(self) -> dict[str, Any] | None:
        """Stop the relay and return its final counters (None if it never logged them)."""
        if self.proc is None:
            return None
        await stop_process(self.proc)
        match = re.search(r"final stats: (\{.*\})", self.log_text())
        return json.loads(match.group(1)) if match else None


def write_derp_map(path: Path, region_id: int, nodes: list[dict[str, Any]]) -> None:
    """Write a one-region DERP map file for pyheadscale's `derp.paths`.

    A .json file gets tailcfg.DERPMap JSON; a .yaml file gets the lower-case YAML of Headscale's
    documentation, so the scenarios cover both ways operators write these files.
    """
    region = {"RegionID": region_id, "RegionCode": "e2e", "RegionName": "e2e relays", "Nodes": nodes}
    document = {"Regions": {region_id: region}}
    if path.suffix == ".json":
        path.write_text(json.dumps(document, indent=2))
    else:
        path.write_text(yaml.safe_dump(_lower_keys(document)))


def _lower_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k.lower() if isinstance(k, str) else k: _lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_keys(v) for v in value]
    return value
