"""Real tsnet clients logging in through a real OpenID provider (npm's oidc-provider).

Node A (no auth key) gets a login URL; a browser (an HTTP client with cookies) follows it through the
provider's sign-in and consent pages as alice, is shown pyheadscale's confirmation page naming node A, presses
its button, and A joins. Node C (no auth key) tries the same as bob, whose
email domain is not in `oidc.allowed_domains`: the browser ends on a refusal page and C never joins. Node B
(preauth key) then fetches A's page over the tailnet, so A's node is really part of the tailnet.

Everything, the provider included, runs inside a private namespace (see netns.py); prints one JSON line.
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
from tests.e2e.caddynode import CaddyNode, proxy_site, responder_site, stop_nodes
from tests.e2e.netns import setup_loopback_only
from tests.e2e.policy_login_driver import BODY, fetch_until
from tests.e2e.twonode_driver import wait_until
from tests.oidc.browser import Browser
from tests.oidc.conftest import CLIENT_ID, CLIENT_SECRET, PROVIDER_DIR, start_provider, stop_provider
from tests.ports import free_port


async def login_url(server: Server, hostname: str) -> str:
    """The AuthURL the server handed the tsnet node `hostname` (the URL its user would open)."""
    assert await wait_until(lambda: any(p.hostname == hostname for p in server.logins.list()), 60), hostname
    login = next(p for p in server.logins.list() if p.hostname == hostname)
    return f"{server.config.server_url}/register/{login.auth_id}"


async def main(workdir: Path) -> dict[str, Any]:
    setup_loopback_only()
    port, stun_port, proxy_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    provider = await start_provider(PROVIDER_DIR, f"{url}/oidc/callback", workdir / "provider.log")
    raw = {
        "server_url": url,
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": "",
        "unix_socket": "",
        "derp": {"server": {"enabled": True, "stun_listen_addr": f"127.0.0.1:{stun_port}"}},
        "oidc": {
            "issuer": provider.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "allowed_domains": ["example.com"],
            "pkce": {"enabled": True},
        },
    }
    server = Server(build_config(raw, data_dir=workdir / "server"))
    await server.start()
    store = server.store
    assert store is not None
    result: dict[str, Any] = {"ok": False}
    nodes: list[CaddyNode] = []
    browser = Browser()
    try:
        node_a = CaddyNode(workdir, "nodea", url, None, responder_site("nodea", BODY))
        node_c = CaddyNode(workdir, "nodec", url, None, ':81 {\n  bind tailscale/nodec\n  respond "c"\n}\n')
        nodes += [node_a, node_c]
        await node_a.start()
        await node_c.start()

        asking = await browser.log_in(await login_url(server, "nodea"), "alice", confirm=False)
        result["confirmation_page"] = {
            "status": asking.status,
            "names_machine": "Hostname: nodea" in asking.text and "Machine key: mkey:" in asking.text,
            "names_account": "alice@example.com" in asking.text,
            "registered_before_confirming": any(n.hostname == "nodea" for n in store.nodes.values()),
        }
        page = await browser.confirm(asking)
        result["alice_page"] = {
            "status": page.status,
            "success": "Login successful" in page.text,
            "via_provider": any("/interaction/" in u for u in asking.trail),
        }
        joined = await wait_until(
            lambda: any(n.hostname == "nodea" and store.is_online(n.id) for n in store.nodes.values()), 60
        )
        a = next((n for n in store.nodes.values() if n.hostname == "nodea"), None)
        owner = store.users.get(a.user_id) if a and a.user_id else None
        result["a"] = {
            "online": joined,
            "method": a.register_method if a else None,
            "owner_email": owner.email if owner else None,
        }

        refused = await Browser().log_in(await login_url(server, "nodec"), "bob")
        result["bob_page"] = {
            "status": refused.status,
            "says_why": "email domain of bob@other.org is not allowed" in refused.text,
        }
        result["c_registered"] = any(n.hostname == "nodec" for n in store.nodes.values())

        _, key = await store.create_preauth_key(owner.id if owner else None, reusable=True, tags=["tag:web"])
        node_b = CaddyNode(
            workdir,
            "nodeb",
            url,
            key,
            proxy_site("nodeb", proxy_port, str(a.ipv4) if a else "0.0.0.0"),
        )
        nodes.append(node_b)
        await node_b.start()
        status, _ = await fetch_until(proxy_port, True, 90)
        result["fetch_from_a"] = status
        result["ok"] = True
        return result
    finally:
        await browser.close()
        await stop_nodes(nodes, result)
        await server.stop()
        await stop_provider(provider)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(Path(tmp)))))
