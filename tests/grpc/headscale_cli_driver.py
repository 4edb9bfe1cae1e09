"""Driver (run under `unshare -n`): Headscale's own CLI, remote mode, against pyheadscale's gRPC API.

Starts pyheadscale with TLS on its gRPC listener (a self-signed certificate: the remote CLI always speaks
TLS, HEADSCALE_CLI_INSECURE only skips verifying it), then runs the real `headscale` binary with
HEADSCALE_CLI_ADDRESS / HEADSCALE_CLI_API_KEY and prints one JSON line: each command's exit code and output,
and what the store holds afterwards.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from pyheadscale.tailkey import MachinePrivate, NodePrivate
from pyheadscale.tls.self_signed import self_signed_pem
from tests.e2e.netns import setup_loopback_only
from tests.live_server import LiveServer
from tests.ports import free_port


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (files grpc.crt, grpc.key in `directory`)."""
    key_pem, cert_pem = self_signed_pem("127.0.0.1", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert_path, key_path = directory / "grpc.crt", directory / "grpc.key"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    return cert_path, key_path


def remote_env(home: Path, grpc_address: str, api_key: str) -> dict[str, str]:
    """Headscale's CLI in remote mode: pyheadscale's gRPC at `grpc_address`, its TLS unverified."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HEADSCALE_CLI_ADDRESS": grpc_address,
        "HEADSCALE_CLI_API_KEY": api_key,
        "HEADSCALE_CLI_INSECURE": "true",
        "HEADSCALE_DISABLE_CHECK_UPDATES": "true",
    }


async def headscale(binary: str, env: dict[str, str], *argv: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        binary,
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return {"argv": list(argv), "code": proc.returncode, "out": out.decode(), "err": err.decode()}


async def main(binary: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="hs-cli-"))
    cert, key = self_signed(work)
    grpc_address = f"127.0.0.1:{free_port()}"
    live = await LiveServer(
        work, keepalive=30.0, grpc_listen_addr=grpc_address, tls_cert_path=str(cert), tls_key_path=str(key)
    ).start()
    try:
        store = live.store
        _record, api_key = await store.create_api_key(datetime.now(UTC) + timedelta(hours=1))
        alice = await store.create_user("alice")
        preauth, _text = await store.create_preauth_key(alice.id)
        node = await store.register_with_key(
            preauth,
            machine_key=MachinePrivate.generate().public().text,
            node_key=NodePrivate.generate().public().text,
            hostinfo={"Hostname": "router", "RoutableIPs": ["10.0.0.0/24"]},
            expiry=None,
        )
        env = remote_env(work, grpc_address, api_key)
        runs = [
            await headscale(binary, env, "users", "list", "-o", "json"),
            await headscale(binary, env, "users", "list"),
            await headscale(binary, env, "nodes", "list", "-o", "json"),
            await headscale(binary, env, "nodes", "list"),
            await headscale(
                binary, env, "preauthkeys", "create", "-u", str(alice.id), "--reusable", "-o", "json"
            ),
            await headscale(binary, env, "nodes", "approve-routes", "-i", str(node.id), "-r", "10.0.0.0/24"),
            await headscale(binary, env, "users", "create", "bob", "-o", "json"),
            await headscale(binary, env, "nodes", "delete", "-i", "99", "--force"),
        ]
        wrong_key = dict(env, HEADSCALE_CLI_API_KEY=api_key[:-4] + "0000")
        refused = await headscale(binary, wrong_key, "users", "list")
        # Local mode: no address, the config's unix_socket, where Headscale's CLI speaks gRPC.
        local_config = work / "headscale-cli.yaml"
        local_config.write_text(f"unix_socket: {live.socket_path}\ndisable_check_updates: true\n")
        local_env = {key: env[key] for key in ("PATH", "HOME", "HEADSCALE_DISABLE_CHECK_UPDATES")}
        local = [
            await headscale(binary, local_env, "-c", str(local_config), "users", "list", "-o", "json"),
            await headscale(binary, local_env, "-c", str(local_config), "users", "create", "carol"),
        ]
        return {
            "runs": runs,
            "refused": refused,
            "local": local,
            "approved_routes": store.nodes[node.id].approved_routes,
            "reusable_keys": sum(1 for k in store.preauth_keys.values() if k.reusable),
            "users": sorted(u.name for u in store.users.values()),
        }
    finally:
        await live.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    setup_loopback_only()
    print(json.dumps(asyncio.run(main(sys.argv[1]))), flush=True)
