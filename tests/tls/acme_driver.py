"""ACME against Pebble (Let's Encrypt's test CA) with real validation, and a client trusting Pebble's CA.

Runs inside a private network and mount namespace (see test_acme_pebble.py): /etc/hosts is bind-mounted to map
the test hostname to 127.0.0.1 for everything in here (Pebble's validation, tsnet's dialing), so Pebble
validates for real: it fetches the HTTP-01 proof from pyheadscale's tls_letsencrypt_listen, and makes the
TLS-ALPN-01 handshake to pyheadscale's listen_addr. Phases:

1. HTTP-01: pyheadscale gets a certificate; a tsnet node trusting Pebble's root (SSL_CERT_FILE) joins over
   https://HOSTNAME and comes online.
2. Restart on the same cache directory: the cached certificate is served at once (same serial); with the
   renewal window widened past its lifetime, it is renewed in the background (new serial, same hostname).
3. TLS-ALPN-01 on a fresh cache directory: a certificate is issued through the main listener.

Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable by hand, without PYTHONPATH

from cryptography import x509

from pyheadscale.app import Server
from pyheadscale.config import build_config
from pyheadscale.tls import acme_manager
from tests.e2e.caddynode import CaddyNode
from tests.e2e.netns import setup_loopback_only
from tests.e2e.twonode_driver import wait_until
from tests.pki import make_pki
from tests.ports import free_port

HOSTNAME = "hs.example.com"
UDP = socket.SOCK_DGRAM
OVER_TLS = {"TS_DEBUG_USE_DERP_HTTP": "false"}


def map_hostname(workdir: Path) -> None:
    hosts = workdir / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {HOSTNAME}\n")
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)


async def start_pebble(workdir: Path, pebble: str, http_port: int, tls_port: int) -> tuple[Any, str, Path]:
    """Pebble with its own test certificate; returns (process, directory URL, file of its root CA)."""
    pki = make_pki(workdir / "pebble-pki", ["localhost"], ["127.0.0.1"])
    listen, management = free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{listen}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(pki.cert),
            "privateKey": str(pki.key),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "retryAfter": {"authz": 1, "order": 1},
            "keyAlgorithm": "ecdsa",
            "profiles": {"default": {"description": "test", "validityPeriod": 7776000}},
        }
    }
    (workdir / "pebble.json").write_text(json.dumps(config))
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
    log = (workdir / "pebble.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        pebble, "-config", str(workdir / "pebble.json"), env=env, stdout=log, stderr=log, cwd=workdir
    )
    # pyheadscale's ACME client (requests) checks Pebble's API certificate against this bundle.
    os.environ["REQUESTS_CA_BUNDLE"] = str(pki.ca_cert)
    trust = ssl.create_default_context(cafile=str(pki.ca_cert))
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(f"https://127.0.0.1:{management}/roots/0", ssl=trust) as response:
                    if response.status == 200:
                        root = workdir / "pebble-root.pem"
                        root.write_bytes(await response.read())
                        return proc, f"https://127.0.0.1:{listen}/dir", root
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("pebble did not start: " + (workdir / "pebble.log").read_text()[-2000:])


async def served_serial(port: int, root: Path) -> int | None:
    """The serial of the certificate served on `port` to a client asking for HOSTNAME and trusting Pebble."""
    context = ssl.create_default_context(cafile=str(root))
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=HOSTNAME), 5
        )
    except (OSError, ssl.SSLError, TimeoutError):
        return None
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return int(x509.load_der_x509_certificate(der).serial_number)


async def serial_when(port: int, root: Path, accept: Any, limit: float) -> int | None:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        serial = await served_serial(port, root)
        if serial is not None and accept(serial):
            return serial
        await asyncio.sleep(0.5)
    return None


def server_config(workdir: Path, name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {
        "server_url": f"https://{HOSTNAME}:{port}",
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": "",
        "unix_socket": "",
        "tls_letsencrypt_hostname": HOSTNAME,
        "tls_letsencrypt_cache_dir": str(workdir / f"{name}-cache"),
        "derp": {"server": {"enabled": True, "stun_listen_addr": f"127.0.0.1:{free_port(UDP)}"}},
    } | extra


async def main(workdir: Path, pebble: str) -> dict[str, Any]:
    setup_loopback_only()
    map_hostname(workdir)
    http_port, tls_port, port = free_port(), free_port(), free_port()
    proc, directory, root = await start_pebble(workdir, pebble, http_port, tls_port)
    result: dict[str, Any] = {"ok": False}
    servers: list[Server] = []
    nodes: list[CaddyNode] = []
    acme = {"acme_url": directory}
    try:
        # 1. HTTP-01, and a real client joining over https:// trusting Pebble's root.
        raw = server_config(workdir, "http01", port, tls_letsencrypt_listen=f"127.0.0.1:{http_port}", **acme)
        server = Server(build_config(raw, data_dir=workdir / "server"))
        servers.append(server)
        await server.start()
        first = await serial_when(port, root, lambda _serial: True, 60)
        result["http01_issued"] = first is not None
        store = server.store
        assert store is not None
        user = await store.create_user("alice")
        _, key = await store.create_preauth_key(user.id)
        node = CaddyNode(
            workdir,
            "nodea",
            raw["server_url"],
            key,
            ':80 {\n  bind tailscale/nodea\n  respond "a"\n}\n',
            extra_env=OVER_TLS | {"SSL_CERT_FILE": str(root)},
        )
        nodes.append(node)
        await node.start()
        result["client_online"] = await wait_until(
            lambda: any(n.hostname == "nodea" and store.is_online(n.id) for n in store.nodes.values()), 90
        )
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{http_port}/health", allow_redirects=False) as response:
                result["http_redirect"] = [response.status, response.headers.get("Location")]
        await node.stop()
        await server.stop()
        servers.clear()

        # 2. Restart on the same cache: the cached certificate at once, then a renewal.
        acme_manager.RENEW_BEFORE = timedelta(days=3650)
        server = Server(build_config(raw, data_dir=workdir / "server"))
        servers.append(server)
        await server.start()
        result["cached_serial_same"] = await served_serial(port, root) == first
        renewed = await serial_when(port, root, lambda serial: serial != first, 60)
        result["renewed"] = renewed is not None and renewed != first
        await server.stop()
        servers.clear()
        acme_manager.RENEW_BEFORE = timedelta(days=30)

        # 3. TLS-ALPN-01, answered on listen_addr (Pebble's tlsPort).
        raw = server_config(workdir, "alpn", tls_port, tls_letsencrypt_challenge_type="TLS-ALPN-01", **acme)
        server = Server(build_config(raw, data_dir=workdir / "server-alpn"))
        servers.append(server)
        await server.start()
        result["tls_alpn01_issued"] = await serial_when(tls_port, root, lambda _serial: True, 60) is not None
        result["ok"] = True
        return result
    finally:
        for caddy in nodes:
            await caddy.stop()
        for server in servers:
            await server.stop()
        proc.terminate()
        await proc.wait()
        if not all(v for k, v in result.items() if k != "http_redirect"):
            result["pebble_log"] = (workdir / "pebble.log").read_text(errors="replace")[-4000:]
            result["logs"] = {caddy.name: caddy.log_tail() for caddy in nodes}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(Path(tmp), sys.argv[1]))))
