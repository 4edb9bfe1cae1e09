"""The scenarios tailscaled_driver.py runs, in order, on one shared lab; each returns its evidence.

Evidence is what a user could see: `tailscale status --json` fields, `tailscale ping` paths, what a whoami
server saw as the source of a real connection, DNS answers from 100.100.100.100, plus the server's view
where the scenario is about the server (endpoints, routes, deleted nodes). test_tailscaled.py judges it.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from typing import Any

from tests.e2e.tailscaled import Tailscaled
from tests.e2e.tailscaled_driver import (
    BASE_DOMAIN,
    DENIED_PORT,
    EXTRA_RECORD,
    INET_ADDRESS,
    LANHOST_ADDRESSES,
    LOGIN_SERVER,
    SPLIT_DNS_ZONE,
    WHOAMI_PORT,
    Run,
)

QUAD_100 = "100.100.100.100"


def peer_summary(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fields of each peer in `tailscale status --json` the scenarios look at, by HostName."""
    fields = (
        "TailscaleIPs",
        "Online",
        "CurAddr",
        "Relay",
        "PrimaryRoutes",
        "ExitNodeOption",
        "ExitNode",
        "Expired",
        "Tags",
        "DNSName",
    )
    return {p["HostName"]: {k: p.get(k) for k in fields} for p in (status.get("Peer") or {}).values()}


def self_summary(status: dict[str, Any]) -> dict[str, Any]:
    me = status.get("Self") or {}
    return {
        "BackendState": status.get("BackendState"),
        "TailscaleIPs": me.get("TailscaleIPs"),
        "DNSName": me.get("DNSName"),
        "Tags": me.get("Tags"),
        "KeyExpiry": me.get("KeyExpiry"),
        "Expired": me.get("Expired"),
        "UserID": me.get("UserID"),
    }


async def netmap_endpoints(daemon: Tailscaled, hostname: str) -> list[str] | None:
    """The endpoints of peer `hostname` in the netmap the daemon got from control (`tailscale debug netmap`).

    What a peer learnt through pyheadscale, as opposed to `tailscale ping`, whose path may also come from
    disco messages the peers exchanged through DERP.
    """
    status, out, err = await daemon.cli("debug", "netmap")
    if status != 0:
        raise RuntimeError(f"[{daemon.name}] tailscale debug netmap: {err}")
    for peer in json.loads(out).get("Peers") or []:
        if str(peer.get("Name", "")).split(".")[0] == hostname:
            return list(peer.get("Endpoints") or [])
    return None


async def wait_netmap_endpoints(daemon: Tailscaled, hostname: str, wan: str, limit: float = 30) -> list[str]:
    """`netmap_endpoints` once it lists an endpoint at public address `wan`, or as it is after `limit` s.

    The endpoints reach a peer's netmap through control asynchronously (Headscale batches them), so a
    snapshot taken the moment the peers first talk may still predate them.
    """
    deadline = time.monotonic() + limit
    while True:
        endpoints = await netmap_endpoints(daemon, hostname) or []
        if any(e.startswith(f"{wan}:") for e in endpoints) or time.monotonic() > deadline:
            return endpoints
        await asyncio.sleep(0.5)


async def join_pair(run: Run, first: str, second: str, key: str = "alice") -> tuple[Tailscaled, Tailscaled]:
    """Start and `tailscale up --authkey` two nodes, then wait until each lists the other online."""
    nodes = []
    for name in (first, second):
        daemon = run.nodes.get(name) or await run.tailscaled(run.lab.hosts[name])
        await daemon.up(LOGIN_SERVER, auth_key=run.keys[key])
        nodes.append(daemon)
    for daemon, other in ((nodes[0], second), (nodes[1], first)):
        await daemon.wait_for(
            lambda s, o=other: any(
                p["HostName"] == o and p.get("Online") for p in (s.get("Peer") or {}).values()
            )
        )
    return nodes[0], nodes[1]


async def whoami_server(run: Run, daemon: Tailscaled, *ports: int) -> None:
    """A whoami server on the node's host, on every address (the tailnet one included)."""
    await run.service(daemon.host, "serve-whoami", "0.0.0.0", *(str(p) for p in ports))


async def join(run: Run) -> dict[str, Any]:
    """`tailscale up --login-server --authkey` on a and b; each sees the other, and a connection crosses."""
    a, b = await join_pair(run, "a", "b")
    await whoami_server(run, a, WHOAMI_PORT, DENIED_PORT)
    await whoami_server(run, b, WHOAMI_PORT)
    a_ip, b_ip = await a.ip(), await b.ip()
    return {
        "a": self_summary(await a.status()),
        "b": self_summary(await b.status()),
        "a_peers": peer_summary(await a.status()),
        "b_peers": peer_summary(await b.status()),
        "b_to_a": await run.eventually(lambda: run.whoami(b.host, a_ip)),
        "a_to_b": await run.eventually(lambda: run.whoami(a.host, b_ip)),
        "ips": {"a": a_ip, "b": b_ip},
        "server": {n.hostname: {"ipv4": str(n.ipv4), "user_id": n.user_id} for n in run.store.nodes.values()},
    }


async def direct(run: Run) -> dict[str, Any]:
    """Behind two easy NATs, a and b punch through: `tailscale ping` ends "via <public ip:port>"."""
    a, b = run.nodes["a"], run.nodes["b"]
    b_to_a = await b.ping(await a.ip(), count=30, limit=240)
    a_to_b = await a.ping(await b.ip(), count=30, limit=240)
    wan = {"a": run.lab.hosts["nat-a"].address, "b": run.lab.hosts["nat-b"].address}
    netmaps = {
        "a": await wait_netmap_endpoints(b, "a", wan["a"]),
        "b": await wait_netmap_endpoints(a, "b", wan["b"]),
    }
    server_a, server_b = run.node("a"), run.node("b")
    assert server_a is not None and server_b is not None
    return {
        "b_to_a": b_to_a,
        "a_to_b": a_to_b,
        "wan": wan,
        "endpoints": {"a": list(server_a.endpoints), "b": list(server_b.endpoints)},
        "netmap_endpoints": netmaps,
        "b_peer_a": peer_summary(await b.status()).get("a"),
        "traffic": await run.whoami(b.host, await a.ip()),
    }


async def symmetric(run: Run) -> dict[str, Any]:
    """Behind two symmetric NATs no hole can be punched: c and d talk through DERP, and still talk."""
    c, d = await join_pair(run, "c", "d")
    await whoami_server(run, d, WHOAMI_PORT)
    d_ip = await d.ip()
    traffic = await run.eventually(lambda: run.whoami(c.host, d_ip))
    ping = await c.ping(d_ip, count=8)
    assert run.server.derp is not None
    return {
        "ping": ping,
        "traffic": traffic,
        "c_peer_d": peer_summary(await c.status()).get("d"),
        "derp": run.server.derp.stats(),
    }


async def policy_deny(run: Run) -> dict[str, Any]:
    """The policy opens ports 8000-8099 only: a's own tailscaled drops b's connection to DENIED_PORT."""
    a, b = run.nodes["a"], run.nodes["b"]
    a_ip = await a.ip()
    allowed = await run.whoami(b.host, a_ip, WHOAMI_PORT)
    denied = await run.whoami(b.host, a_ip, DENIED_PORT, limit=4)
    # The same port answers on a's own LAN address: the server is up, the tailnet filter is what drops.
    lan = await run.whoami(run.lab.hosts["nat-a"], run.lab.hosts["a"].address, DENIED_PORT)
    await asyncio.sleep(1)
    drops = [line for line in a.log_text().splitlines() if "Drop:" in line and f":{DENIED_PORT}" in line]
    return {"allowed": allowed, "denied": denied, "lan": lan, "filter_drops": drops[-3:]}


async def network_change(run: Run) -> dict[str, Any]:
    """b moves to another network (new LAN, NAT and public address); a learns it and goes direct again."""
    a, b = run.nodes["a"], run.nodes["b"]
    old_wan = run.lab.hosts["nat-b"].address
    router = await asyncio.to_thread(run.lab.move_behind, run.lab.hosts["b"], "nat-b2")
    new_wan = router.address

    def has_new_endpoint() -> bool:
        node = run.node("b")
        return node is not None and any(e.startswith(f"{new_wan}:") for e in node.endpoints)

    # b's map stream still runs over its old connection, through a NAT that is gone: b notices it is dead
    # when a write fails or, at worst, when its watchdog gives up on a silent stream after 120 s
    # (controlclient's watchdogTimeout), then dials again from the new network.
    moved = time.monotonic()
    learnt = await run.wait_store(has_new_endpoint, 150)
    learnt_after = round(time.monotonic() - moved, 1)
    server_b = run.node("b")
    # pyheadscale passes the new endpoint on to a (a PeersChangedPatch)
    a_netmap = await wait_netmap_endpoints(a, "b", new_wan, 20)
    a_view = await a.wait_for(
        lambda s: any(
            p["HostName"] == "b" and str(p.get("CurAddr", "")).startswith(f"{new_wan}:")
            for p in (s.get("Peer") or {}).values()
        ),
        5,
    )
    b_ip = await b.ip()
    ping = await a.ping(b_ip, count=20)
    return {
        "old_wan": old_wan,
        "new_wan": new_wan,
        "server_learnt": learnt,
        "server_learnt_after_s": learnt_after,
        "server_endpoints": list(server_b.endpoints) if server_b else None,
        "a_netmap_b_endpoints": a_netmap,
        "ping": ping,
        "a_peer_b": peer_summary(a_view).get("b"),
        "traffic": await run.eventually(lambda: run.whoami(a.host, b_ip)),
    }


async def subnet_routes(run: Run) -> dict[str, Any]:
    """a advertises both halves of 203.0.113.0/24: autoApprovers take one, the CLI approves the other."""
    a, b = run.nodes["a"], run.nodes["b"]
    lanhost_cli, lanhost_auto = LANHOST_ADDRESSES
    evidence: dict[str, Any] = {}
    evidence["before_accept"] = await run.whoami(b.host, lanhost_auto, limit=3)
    await a.cli_ok("set", "--advertise-routes=203.0.113.0/25,203.0.113.128/25")
    await run.wait_store(lambda: bool((n := run.node("a")) and len(n.announced_routes) == 2))
    server_a = run.node("a")
    assert server_a is not None
    evidence["announced"] = list(server_a.announced_routes)
    evidence["approved_by_policy"] = list(server_a.approved_routes)
    await b.cli_ok("set", "--accept-routes")
    evidence["auto_approved"] = await run.eventually(lambda: run.whoami(b.host, lanhost_auto))
    evidence["unapproved"] = await run.whoami(b.host, lanhost_cli, limit=3)
    evidence["b_peer_a_before"] = peer_summary(await b.status()).get("a")
    evidence["cli"] = await run.pyheadscale(
        "nodes", "approve-routes", "-i", str(server_a.id), "-r", "203.0.113.0/25,203.0.113.128/25"
    )
    evidence["cli_approved"] = await run.eventually(lambda: run.whoami(b.host, lanhost_cli))
    status = await b.wait_for(
        lambda s: len((peer_summary(s).get("a") or {}).get("PrimaryRoutes") or []) == 2, 20
    )
    evidence["b_peer_a_after"] = peer_summary(status).get("a")
    await b.cli_ok("set", "--accept-routes=false")
    evidence["after_unaccept"] = await run.whoami(b.host, lanhost_cli, limit=3)
    return evidence


async def exit_node(run: Run) -> dict[str, Any]:
    """b sends its internet traffic through a: the internet host sees a's public address instead of b's."""
    a, b = run.nodes["a"], run.nodes["b"]
    b_router = run.lab.hosts["b"].router
    assert b_router is not None
    evidence: dict[str, Any] = {"wan": {"a": run.lab.hosts["nat-a"].address, "b": b_router.address}}
    evidence["before"] = await run.whoami(b.host, INET_ADDRESS)
    await a.cli_ok("set", "--advertise-exit-node")
    await run.wait_store(lambda: bool((n := run.node("a")) and "0.0.0.0/0" in n.approved_routes))
    server_a = run.node("a")
    evidence["approved"] = list(server_a.approved_routes) if server_a else None
    await b.wait_for(lambda s: bool((peer_summary(s).get("a") or {}).get("ExitNodeOption")), 20)
    await b.cli_ok("set", f"--exit-node={await a.ip()}")
    status = await b.status()
    evidence["exit_node_status"] = status.get("ExitNodeStatus")
    evidence["b_peer_a"] = peer_summary(status).get("a")
    evidence["via_exit"] = await run.eventually(lambda: run.whoami(b.host, INET_ADDRESS))
    await b.cli_ok("set", "--exit-node=")
    evidence["after"] = await run.eventually(lambda: run.whoami(b.host, INET_ADDRESS))
    return evidence


async def dns_query(run: Run, daemon: Tailscaled, name: str) -> dict[str, Any]:
    status, out, err = await daemon.host.arun(
        [sys.executable, "-m", "tests.e2e.labservices", "dns-query", QUAD_100, name], limit=30
    )
    try:
        return dict(json.loads(out))
    except ValueError:
        return {"error": f"exit {status}: {out} {err}"}


async def magicdns(run: Run) -> dict[str, Any]:
    """100.100.100.100 on b answers a's MagicDNS name, the extra record and (with --accept-dns) split DNS."""
    b = run.nodes["b"]
    evidence: dict[str, Any] = {"a_ip": await run.nodes["a"].ip()}
    await b.cli_ok("set", "--accept-dns=true")
    await asyncio.sleep(1)
    for label, name in (
        ("peer", f"a.{BASE_DOMAIN}"),
        ("extra", EXTRA_RECORD[0]),
        ("split", f"www.{SPLIT_DNS_ZONE}"),
    ):
        deadline = time.monotonic() + 20
        while True:
            answer = await dns_query(run, b, name)
            if answer.get("answers") or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        evidence[label] = answer
    _, out, _ = await b.cli("dns", "status")
    evidence["dns_status"] = out[-3000:]
    await b.cli_ok("set", "--accept-dns=false")
    return evidence


AUTH_URL = re.compile(r"https?://\S+/register/(?P<auth_id>\S+)")


async def interactive_up(run: Run, daemon: Tailscaled, *flags: str, user: str = "alice") -> dict[str, Any]:
    """`tailscale up` without a key: take the login URL it prints to `pyheadscale auth register`."""
    proc = await daemon.cli_spawn(
        "up", f"--login-server={LOGIN_SERVER}", f"--hostname={daemon.name}", "--accept-dns=false", *flags
    )
    assert proc.stdout is not None
    printed = b""
    match = None
    async with asyncio.timeout(60):
        while match is None:
            line = await proc.stdout.readline()
            if not line:
                break
            printed += line
            match = AUTH_URL.search(line.decode(errors="replace"))
    if match is None:
        await proc.wait()
        return {"error": f"no login URL printed: {printed.decode(errors='replace')}"}
    cli = await run.pyheadscale("auth", "register", "--auth-id", match.group("auth_id"), "--user", user)
    try:
        rest, _ = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        rest, _ = await proc.communicate()
    return {
        "url": match.group(0),
        "cli": cli,
        "up_exit": proc.returncode,
        "up_output": (printed + rest).decode(errors="replace")[-2000:],
    }


async def interactive_login(run: Run) -> dict[str, Any]:
    """A new machine runs `tailscale up` with no key; the operator lets it in with `auth register`."""
    host = await asyncio.to_thread(run.lab.behind_nat, "f")
    daemon = await run.tailscaled(host)
    before = self_summary(await daemon.status())
    login = await interactive_up(run, daemon)
    status = await daemon.wait_for(lambda s: s.get("BackendState") == "Running", 30)
    server = run.node("f")
    a_view = await run.nodes["a"].wait_for(lambda s: "f" in peer_summary(s), 20)
    a_ip = await run.nodes["a"].ip()
    return {
        "before": before,
        "login": login,
        "after": self_summary(status),
        "server": {"user_id": server.user_id, "register_method": server.register_method} if server else None,
        "a_peer_f": peer_summary(a_view).get("f"),
        "traffic": await run.eventually(lambda: run.whoami(host, a_ip)),
    }


async def tagged_key(run: Run) -> dict[str, Any]:
    """A node joined with a tagged preauth key belongs to its tag: its client and its peers show the tag."""
    daemon = await run.tailscaled(await asyncio.to_thread(run.lab.behind_nat, "g"))
    await daemon.up(LOGIN_SERVER, auth_key=run.keys["tagged"])
    evidence: dict[str, Any] = {"self": self_summary(await daemon.status())}
    a_view = await run.nodes["a"].wait_for(lambda s: "g" in peer_summary(s), 20)
    evidence["a_peer_g"] = peer_summary(a_view).get("g")
    server = run.node("g")
    evidence["server"] = {"tags": server.tags, "user_id": server.user_id} if server else None
    await daemon.stop()
    return evidence


async def advertise_tags_at_login(run: Run) -> dict[str, Any]:
    """`tailscale up --advertise-tags=tag:server`, interactive login approved for alice (the tag's owner)."""
    daemon = await run.tailscaled(await asyncio.to_thread(run.lab.behind_nat, "h"))
    evidence: dict[str, Any] = {"login": await interactive_up(run, daemon, "--advertise-tags=tag:server")}
    status = await daemon.wait_for(lambda s: s.get("BackendState") == "Running", 20)
    evidence["self"] = self_summary(status)
    server = run.node("h")
    evidence["server"] = {"tags": server.tags, "user_id": server.user_id} if server else None
    await daemon.stop()
    return evidence


async def advertise_tags_with_key(run: Run) -> dict[str, Any]:
    """`--advertise-tags` with a user's preauth key: Headscale v0.29 refuses the registration, naming tags."""
    daemon = await run.tailscaled(await asyncio.to_thread(run.lab.behind_nat, "i"))
    status, out, err = await daemon.cli(
        "up", f"--login-server={LOGIN_SERVER}", "--hostname=i", "--accept-dns=false",
        f"--authkey={run.keys['alice']}", "--advertise-tags=tag:server", "--timeout=30s", limit=60,
    )  # fmt: skip
    server = run.node("i")
    evidence = {
        "up_exit": status,
        "up_output": (out + err)[-2000:],
        "self": self_summary(await daemon.status()),
        "server": {"tags": server.tags, "user_id": server.user_id} if server else None,
    }
    await daemon.stop()
    return evidence


async def logout_relogin(run: Run) -> dict[str, Any]:
    """`tailscale logout` on d: it needs a login, its peers stop seeing it; `up --authkey` brings it back."""
    c, d = run.nodes["c"], run.nodes["d"]
    server_before = run.node("d")
    assert server_before is not None
    await d.cli_ok("logout")
    after_logout = self_summary(await d.wait_for(lambda s: s.get("BackendState") == "NeedsLogin", 20))
    c_view = await c.wait_for(lambda s: "d" not in peer_summary(s) or peer_summary(s)["d"].get("Expired"), 20)
    server_logged_out = run.node("d")
    await d.up(LOGIN_SERVER, auth_key=run.keys["alice"])
    relogin = self_summary(await d.wait_for(lambda s: s.get("BackendState") == "Running", 30))
    c_back = await c.wait_for(lambda s: bool((peer_summary(s).get("d") or {}).get("Online")), 30)
    server_after = run.node("d")
    return {
        "after_logout": after_logout,
        "server_after_logout": {
            "exists": server_logged_out is not None,
            "expired": bool(server_logged_out and run.is_expired(server_logged_out)),
        },
        "c_peer_d_after_logout": peer_summary(c_view).get("d"),
        "relogin": relogin,
        "node_id": {"before": server_before.id, "after": server_after.id if server_after else None},
        "c_peer_d_after_relogin": peer_summary(c_back).get("d"),
        "server_after_relogin": {
            "home_derp": server_after.home_derp,
            "endpoints": list(server_after.endpoints),
        }
        if server_after
        else None,
        "traffic": await run.eventually(lambda: run.whoami(c.host, relogin["TailscaleIPs"][0])),
    }


async def key_expiry(run: Run) -> dict[str, Any]:
    """`pyheadscale nodes expire` on c: c's own client sees its key expired, and so do its peers."""
    c, d = run.nodes["c"], run.nodes["d"]
    server_c = run.node("c")
    assert server_c is not None
    cli = await run.pyheadscale("nodes", "expire", "-i", str(server_c.id))
    own = await c.wait_for(
        lambda s: s.get("BackendState") == "NeedsLogin" or bool((s.get("Self") or {}).get("Expired")), 30
    )
    peer_view = await d.wait_for(
        lambda s: "c" not in peer_summary(s) or bool(peer_summary(s)["c"].get("Expired")), 30
    )
    return {
        "cli": cli,
        "own": self_summary(own),
        "d_peer_c": peer_summary(peer_view).get("c"),
        "d_peers": sorted(peer_summary(peer_view)),
        "traffic": await run.whoami(d.host, str(server_c.ipv4), limit=3),
    }


async def ephemeral(run: Run) -> dict[str, Any]:
    """A node joined with an ephemeral key is deleted once offline past the timeout; peers drop it."""
    daemon = await run.tailscaled(await asyncio.to_thread(run.lab.behind_nat, "e"))
    await daemon.up(LOGIN_SERVER, auth_key=run.keys["ephemeral"])
    server = run.node("e")
    a = run.nodes["a"]
    joined = await a.wait_for(lambda s: "e" in peer_summary(s), 20)
    await daemon.stop(kill=True)  # a machine switched off: no logout
    gone = await run.wait_store(lambda: run.node("e") is None, 60)
    a_after = await a.wait_for(lambda s: "e" not in peer_summary(s), 20)
    return {
        "server": {"ephemeral": server.ephemeral} if server else None,
        "a_saw_e": "e" in peer_summary(joined),
        "deleted": gone,
        "a_peers_after": sorted(peer_summary(a_after)),
    }


async def containment(run: Run) -> dict[str, Any]:
    """Every route of every namespace, all tables, after all the scenarios: what could leave the lab."""
    routes: dict[str, list[dict[str, Any]]] = {}
    for family in ("-4", "-6"):
        for name, argv in [("control", ["ip"]), *((h.name, h.argv(["ip"])) for h in run.lab.hosts.values())]:
            proc = await asyncio.create_subprocess_exec(
                *argv, family, "-j", "route", "show", "table", "all", stdout=asyncio.subprocess.PIPE
            )
            out, _ = await proc.communicate()
            routes.setdefault(name, []).extend(json.loads(out or b"[]"))
    return {"routes": routes}


async def hold(run: Run) -> dict[str, Any]:
    """Not a check: keeps the lab up for ten minutes for a person to look around (see the driver)."""
    await asyncio.sleep(600)
    return {}
