"""Record the golden answers of real Headscale: `python -m tests.golden.record HEADSCALE_BINARY OUT_DIR`.

Runs inside a network namespace of its own (re-executing itself under `unshare -n` unless already there), so
the Headscale it starts can reach nothing but loopback. Writes OUT_DIR/rest.json and OUT_DIR/cli.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.golden.scenario import Step, run

HTTP_PORT = 18080
GRPC_PORT = 18443
NAMESPACE_MARK = "PYHEADSCALE_GOLDEN_NETNS"


def headscale_config(work: Path) -> dict[str, Any]:
    """A loopback-only Headscale: sqlite, DERP from a local file, no update checks, database policy."""
    derp = {
        "regions": {
            900: {
                "regionid": 900,
                "regioncode": "local",
                "regionname": "local",
                "nodes": [{"name": "900a", "regionid": 900, "hostname": "127.0.0.1", "ipv4": "127.0.0.1"}],
            }
        }
    }
    (work / "derp.yaml").write_text(yaml.safe_dump(derp))
    return {
        "server_url": f"http://127.0.0.1:{HTTP_PORT}",
        "listen_addr": f"127.0.0.1:{HTTP_PORT}",
        "metrics_listen_addr": "127.0.0.1:19090",
        "grpc_listen_addr": f"127.0.0.1:{GRPC_PORT}",
        "grpc_allow_insecure": True,
        "noise": {"private_key_path": str(work / "noise_private.key")},
        "prefixes": {"v4": "100.64.0.0/10", "v6": "fd7a:115c:a1e0::/48", "allocation": "sequential"},
        "derp": {"server": {"enabled": False}, "urls": [], "paths": [str(work / "derp.yaml")]},
        "disable_check_updates": True,
        "database": {"type": "sqlite", "sqlite": {"path": str(work / "db.sqlite")}},
        "log": {"level": "warn"},
        "policy": {"mode": "database"},
        "dns": {"magic_dns": False, "override_local_dns": False, "base_domain": "example.com"},
        "unix_socket": str(work / "headscale.sock"),
        "unix_socket_permission": "0770",
        "logtail": {"enabled": False},
    }


def cli(binary: Path, config: Path, *argv: str) -> str:
    proc = subprocess.run(
        [str(binary), "-c", str(config), *argv], capture_output=True, text=True, timeout=60, check=False
    )
    return proc.stdout


async def play(binary: Path, config: Path, api_key: str) -> tuple[dict[str, Any], dict[str, str]]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {api_key}"}) as session:

        async def call(step: Step) -> tuple[int, Any]:
            url = f"http://127.0.0.1:{HTTP_PORT}/api/v1{step.path}"
            async with session.request(step.method, url, params=step.params, json=step.body) as resp:
                return resp.status, await resp.json(content_type=None)

        async def run_cli(argv: tuple[str, ...]) -> str:
            return await asyncio.to_thread(cli, binary, config, *argv)

        return await run(call, run_cli)


def record(binary: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="hs-golden-") as tmp:
        work = Path(tmp)
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump(headscale_config(work)))
        with (work / "headscale.log").open("w") as log:
            proc = subprocess.Popen([str(binary), "-c", str(config), "serve"], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 60
            while not (work / "headscale.sock").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"headscale did not start:\n{(work / 'headscale.log').read_text()}")
                time.sleep(0.2)
            time.sleep(1)
            api_key = json.loads(cli(binary, config, "apikeys", "create", "-e", "24h", "-o", "json"))
            rest, outputs = asyncio.run(play(binary, config, api_key))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rest.json").write_text(json.dumps(rest, indent=2, sort_keys=True) + "\n")
    (out / "cli.json").write_text(json.dumps(outputs, indent=2, sort_keys=True) + "\n")


def main() -> int:
    binary, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    if os.environ.get(NAMESPACE_MARK) != "1":
        script = 'ip link set lo up && exec "$0" -m tests.golden.record "$1" "$2"'
        env = dict(os.environ, **{NAMESPACE_MARK: "1"})
        return subprocess.run(
            ["unshare", "-n", "sh", "-c", script, sys.executable, str(binary), str(out)], env=env, check=False
        ).returncode
    record(binary, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
