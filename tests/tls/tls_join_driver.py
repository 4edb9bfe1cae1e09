"""Real tsnet clients joining pyheadscale over https:// (TLS on listen_addr from tls_cert_path/tls_key_path).

Inside a private namespace (see tests/e2e/netns.py): a test CA signs the server's certificate; nodes A and B
trust it through SSL_CERT_FILE, register with a preauth key over https (the /key fetch, then the TS2021
upgrade over TLS, as nothing listens in cleartext), relay through the embedded DERP over TLS too, and B
fetches a page from A over the tailnet. Node C does not trust the CA and must never register.

Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable by hand, without PYTHONPATH

from pyheadscale.app import Server
from pyheadscale.config import build_config
from tests.e2e.caddynode import CaddyNode, proxy_site, responder_site
from tests.e2e.netns import setup_loopback_only
from tests.e2e.policy_login_driver import BODY, fetch_until
from tests.e2e.twonode_driver import wait_until
from tests.pki import make_pki
from tests.ports import free_port

# DERP goes over TLS like control does (netns.CLIENT_ENV would make it cleartext), and only through the relay.
OVER_TLS = {"TS_DEBUG_USE_DERP_HTTP": "false", "TS_DEBUG_ALWAYS_USE_DERP": "1"}


async def main(workdir: Path) -> dict[str, Any]:
    setup_loopback_only()
    port, stun_port, proxy_port = free_port(), free_port(), free_port()
    url = f"https://127.0.0.1:{port}"
    pki = make_pki(workdir / "pki", ["localhost"], ["127.0.0.1"])
    raw = {
        "server_url": url,
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": "",
        "unix_socket": "",
        "tls_cert_path": str(pki.cert),
        "tls_key_path": str(pki.key),
        "derp": {"server": {"enabled": True, "stun_listen_addr": f"127.0.0.1:{stun_port}"}},
    }
    server = Server(build_config(raw, data_dir=workdir / "server"))
    await server.start()
    store = server.store
    assert store is not None
    result: dict[str, Any] = {"ok": False}
    nodes: list[CaddyNode] = []
    trusting = OVER_TLS | {"SSL_CERT_FILE": str(pki.ca_cert)}
    try:
        user = await store.create_user("alice")
        _, key = await store.create_preauth_key(user.id, reusable=True)
        node_a = CaddyNode(
            workdir,
            "nodea",
            url,
            key,
            responder_site("nodea", BODY),
            extra_env=trusting,
        )
        site_c = ':81 {\n  bind tailscale/nodec\n  respond "c"\n}\n'
        node_c = CaddyNode(workdir, "nodec", url, key, site_c, extra_env=OVER_TLS)
        nodes += [node_a, node_c]
        await node_a.start()
        await node_c.start()
        joined = await wait_until(
            lambda: any(n.hostname == "nodea" and store.is_online(n.id) for n in store.nodes.values()), 90
        )
        result["a_online"] = joined
        a = next((n for n in store.nodes.values() if n.hostname == "nodea"), None)
        node_b = CaddyNode(
            workdir,
            "nodeb",
            url,
            key,
            proxy_site("nodeb", proxy_port, str(a.ipv4) if a else "0.0.0.0"),
            extra_env=trusting,
        )
        nodes.append(node_b)
        await node_b.start()
        status, _ = await fetch_until(proxy_port, True, 90)
        result["fetch_from_a"] = status
        result["registered"] = sorted(n.hostname for n in store.nodes.values())
        c_log = node_c.log_tail(200_000)
        result["c_saw_untrusted_certificate"] = "x509" in c_log or "certificate" in c_log
        result["ok"] = True
        return result
    finally:
        for caddy in nodes:
            await caddy.stop()
        if not result.get("ok") or result.get("fetch_from_a") != 200:
            result["logs"] = {caddy.name: caddy.log_tail() for caddy in nodes}
        await server.stop()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(Path(tmp)))))
