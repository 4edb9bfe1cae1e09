"""Client-visible features with the official tailscaled: one scenario per run, inside a private namespace.

usage: features_driver.py SCENARIO WORKDIR TAILSCALED TAILSCALE

Scenarios:

* taildrop: two nodes of one user; `tailscale file cp` from A to B, `tailscale file get` on B.
* taildrop-disabled: the same with `taildrop.enabled: false`; A's client refuses to list targets.
* ssh-check: B runs Tailscale SSH under a `check` rule; A connects with ssh (ProxyCommand `tailscale nc`),
  the connection waits until the check is approved through the REST API (what `auth approve` calls).
* ssh-accept: B runs Tailscale SSH under an `accept` rule (alice's nodes, as root, to her own nodes); A gets
  in at once and runs a command; A as a local user the rule does not list, and C (bob's node, not in the
  rule's src for B) are refused by B's tailscaled.

* ha-routes: routers R1 and R2 both serve 198.51.100.0/24 (a host on this namespace's lo); client C, with
  --accept-routes, fetches from that host over the tailnet in a loop while the primary router's tailscaled
  is killed; the route fails over to the other router and the fetches resume through it.
* ha-routes-silent: the same, but the primary's tailscaled is frozen (SIGSTOP) so that only the health
  probes notice; after SIGCONT it answers probes again and the route stays with the other router.

* login-tags: `tailscale up --advertise-tags` without an auth key, approved with `auth register` for a user:
  tag:web (alice owns it) makes a tagged node; tag:db (only group:ops owns it) is refused, with the reason.

pyheadscale runs in this process with its embedded DERP relay and STUN server; the daemons use userspace
networking (see tsd_node.py). Prints one JSON line with what was observed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable by hand, without PYTHONPATH

import aiohttp

from pyheadscale.app import Server
from pyheadscale.config import build_config
from tests.e2e.netns import setup_loopback_only
from tests.e2e.tsd_node import TailscaledNode
from tests.ports import free_port

SSH_CHECK_POLICY = {
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
    "ssh": [
        {
            "action": "check",
            "src": ["autogroup:member"],
            "dst": ["autogroup:self"],
            "users": ["root"],
            "checkPeriod": "1h",
        }
    ],
}

SSH_ACCEPT_POLICY = {
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
    "ssh": [
        {
            "action": "accept",
            "src": ["autogroup:member"],
            "dst": ["autogroup:self"],
            "users": ["root"],
        }
    ],
}


async def eventually(probe: Callable[[], Awaitable[Any]], limit: float, pause: float = 0.5) -> Any:
    """The first truthy value `probe` returns within `limit` seconds, else None."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = await probe()
            if value:
                return value
        await asyncio.sleep(pause)
    return None


class Scenario:
    def __init__(self, workdir: Path, tailscaled: Path, tailscale: Path, extra: dict[str, Any]) -> None:
        self.workdir, self.tailscaled, self.tailscale = workdir, tailscaled, tailscale
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        stun = free_port(socket.SOCK_DGRAM)
        self.config = build_config(
            {
                "server_url": self.url,
                "listen_addr": f"127.0.0.1:{self.port}",
                "metrics_listen_addr": "",
                "derp": {"server": {"enabled": True, "stun_listen_addr": f"127.0.0.1:{stun}"}},
                **extra,
            },
            data_dir=workdir / "server",
        )
        self.server = Server(self.config)
        self.nodes: list[TailscaledNode] = []

    @property
    def store(self) -> Any:
        return self.server.store

    async def node(self, name: str) -> TailscaledNode:
        node = TailscaledNode(self.workdir, name, self.tailscaled, self.tailscale)
        self.nodes.append(node)
        await node.start()
        return node

    async def auth_key(self, user_name: str = "alice", **kwargs: Any) -> str:
        user = self.store.user_by_name(user_name) or await self.store.create_user(user_name)
        _, key = await self.store.create_preauth_key(user.id, reusable=True, **kwargs)
        return str(key)

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        _, secret = await self.store.create_api_key(None)
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"}) as session,
            session.request(method, f"{self.url}/api/v1{path}", json=body) as resp,
        ):
            return resp.status, await resp.json()

    def log_tails(self) -> dict[str, str]:
        return {n.name: n.log_tail() for n in self.nodes}

    async def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                await node.stop()
        await self.server.stop()


async def taildrop(s: Scenario) -> dict[str, Any]:
    key = await s.auth_key()
    a, b = await s.node("nodea"), await s.node("nodeb")
    await a.up(s.url, auth_key=key)
    await b.up(s.url, auth_key=key)
    await a.wait_for_peer("nodeb")
    targets = await eventually(lambda: a.cli("file", "cp", "--targets"), 60)
    payload = os.urandom(64 * 1024)
    source = s.workdir / "gift.bin"
    source.write_bytes(payload)
    await eventually(lambda: a.cli("file", "cp", str(source), "nodeb:", limit=60), 90, pause=2)
    inbox = s.workdir / "inbox"
    inbox.mkdir()

    async def received() -> bool:
        await b.cli("file", "get", str(inbox), limit=30)
        return (inbox / "gift.bin").exists()

    got = await eventually(received, 60, pause=1)
    data = (inbox / "gift.bin").read_bytes() if got else b""
    return {"targets": targets, "received": len(data), "ok": data == payload}


async def taildrop_disabled(s: Scenario) -> dict[str, Any]:
    key = await s.auth_key()
    a, b = await s.node("nodea"), await s.node("nodeb")
    await a.up(s.url, auth_key=key)
    await b.up(s.url, auth_key=key)
    await a.wait_for_peer("nodeb")
    return {"targets": await a.cli("file", "cp", "--targets", check=False)}


async def start_ssh(client: TailscaledNode, login: str, command: str) -> asyncio.subprocess.Process:
    """The OpenSSH client on `client`, reaching `login` (user@tailnet-ip) through `tailscale nc`."""
    proxy = f"{client.tailscale} --socket={client.socket} nc %h %p"
    return await asyncio.create_subprocess_exec(
        "ssh",
        "-F",
        "/dev/null",
        "-o",
        f"ProxyCommand={proxy}",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        login,
        command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=client.env,
    )


async def ssh_outcome(ssh: asyncio.subprocess.Process, limit: float) -> tuple[int | None, str, str]:
    """Exit status, stdout and stderr (tails) of an ssh run, killed after `limit` seconds."""
    try:
        out, err = await asyncio.wait_for(ssh.communicate(), limit)
    except TimeoutError:
        ssh.kill()
        out, err = await ssh.communicate()
    return ssh.returncode, out.decode()[-2000:], err.decode()[-2000:]


async def ssh_check(s: Scenario) -> dict[str, Any]:
    assert s.server.policy is not None
    await s.server.policy.apply(json.dumps(SSH_CHECK_POLICY))
    key = await s.auth_key()
    a, b = await s.node("nodea"), await s.node("nodeb")
    await a.up(s.url, auth_key=key)
    await b.up(s.url, "--ssh", auth_key=key)
    peer = await a.wait_for_peer("nodeb")
    b_ip = peer["TailscaleIPs"][0]
    ssh = await start_ssh(a, f"root@{b_ip}", "echo checked-and-in")
    checks = await eventually(lambda: asyncio.sleep(0, s.server.ssh_checks.list()), 60)
    result: dict[str, Any] = {"pending_checks": len(checks or [])}
    if checks:
        check = checks[0]
        result["pair"] = [check.src_id, check.dst_id]
        result["approve"] = (await s.api("POST", "/auth/approve", {"auth_id": check.auth_id}))[0]
    code, out, err = await ssh_outcome(ssh, 90)
    result.update(ssh_exit=code, stdout=out, stderr=err)
    nodes = {n.hostname: n.id for n in s.store.nodes.values()}
    result["ids"] = [nodes.get("nodea"), nodes.get("nodeb")]
    # A second connection within checkPeriod goes straight in.
    _, out2, _ = await ssh_outcome(await start_ssh(a, f"root@{b_ip}", "echo again"), 60)
    result.update(second_stdout=out2[-500:], checks_after=len(s.server.ssh_checks.list()))
    return result


async def ssh_accept(s: Scenario) -> dict[str, Any]:
    assert s.server.policy is not None
    await s.server.policy.apply(json.dumps(SSH_ACCEPT_POLICY))
    alice, bob = await s.auth_key("alice"), await s.auth_key("bob")
    a, b, c = await s.node("nodea"), await s.node("nodeb"), await s.node("nodec")
    await a.up(s.url, auth_key=alice)
    await b.up(s.url, "--ssh", auth_key=alice)
    await c.up(s.url, auth_key=bob)
    b_ip = (await a.wait_for_peer("nodeb"))["TailscaleIPs"][0]
    await c.wait_for_peer("nodeb")
    result: dict[str, Any] = {}
    # Tailscale SSH can start answering a moment after the peer appears; retry the allowed login a few
    # times (each attempt is a fresh connection that must get in without any check).
    for attempt in range(1, 6):
        code, out, err = await ssh_outcome(await start_ssh(a, f"root@{b_ip}", "echo accepted-and-in"), 60)
        result.update(attempts=attempt, ssh_exit=code, stdout=out, stderr=err)
        if code == 0 or "tailnet policy" in err:
            break
        await asyncio.sleep(2)
    result["checks_seen"] = len(s.server.ssh_checks.list())
    code, out, err = await ssh_outcome(await start_ssh(a, f"nobody@{b_ip}", "echo wrong-user-in"), 60)
    result["other_user"] = {"ssh_exit": code, "stdout": out, "stderr": err}
    code, out, err = await ssh_outcome(await start_ssh(c, f"root@{b_ip}", "echo other-owner-in"), 60)
    result["other_owner"] = {"ssh_exit": code, "stdout": out, "stderr": err}
    result["checks_after"] = len(s.server.ssh_checks.list())
    return result


HA_ROUTE, HA_HOST = "198.51.100.0/24", "198.51.100.10"


def add_host_address(address: str) -> None:
    """A documentation address on lo: the "LAN host" behind the subnet routers, inside this namespace."""
    subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)


async def serve_echo(host: str) -> tuple[asyncio.Server, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readline()
            writer.write(b"routed\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, host, 0)
    return server, int(server.sockets[0].getsockname()[1])


LAST_FETCH_ERROR: list[str] = []


async def fetch_through(node: TailscaledNode, host: str, port: int) -> bool:
    proc = await asyncio.create_subprocess_exec(
        str(node.tailscale),
        f"--socket={node.socket}",
        "nc",
        host,
        str(port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=node.env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(b"hello\n"), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        LAST_FETCH_ERROR[:] = ["timed out"]
        return False
    if out != b"routed\n":
        LAST_FETCH_ERROR[:] = [f"exit {proc.returncode}: {out[-200:]!r} {err.decode()[-300:]}"]
    return out == b"routed\n"


def primary_router(status: dict[str, Any]) -> str | None:
    for peer in (status.get("Peer") or {}).values():
        if HA_ROUTE in (peer.get("PrimaryRoutes") or []):
            return str(peer.get("HostName"))
    return None


async def ha_routes(s: Scenario, *, freeze: bool = False) -> dict[str, Any]:
    """With `freeze` the primary's tailscaled is stopped (SIGSTOP), not killed: its connections stay open, so
    only the health probes can find it out; once resumed it must not take the route back."""
    add_host_address(HA_HOST)
    echo, port = await serve_echo(HA_HOST)
    key = await s.auth_key()
    r1, r2, c = await s.node("router1"), await s.node("router2"), await s.node("client")
    await r1.up(s.url, f"--advertise-routes={HA_ROUTE}", auth_key=key)
    await r2.up(s.url, f"--advertise-routes={HA_ROUTE}", auth_key=key)
    for node in list(s.store.nodes.values()):
        await s.store.set_approved_routes(node.id, [HA_ROUTE])
    await c.up(s.url, "--accept-routes", auth_key=key)
    await c.wait_for_peer("router2")
    result: dict[str, Any] = {"first_primary": await eventually(lambda: _primary(c), 60)}
    result["before"] = bool(await eventually(lambda: fetch_through(c, HA_HOST, port), 90, pause=1))
    if not result["before"]:
        result["fetch_error"] = LAST_FETCH_ERROR[-1:]
        result["client_status"] = await c.status()
        return result
    outcomes: list[tuple[float, bool]] = []
    stop = asyncio.Event()

    async def keep_fetching() -> None:
        while not stop.is_set():
            outcomes.append((time.monotonic(), await fetch_through(c, HA_HOST, port)))
            await asyncio.sleep(0.5)

    fetcher = asyncio.create_task(keep_fetching())
    await eventually(lambda: asyncio.sleep(0, any(ok for _, ok in outcomes)), 60)
    # The health probes reach tailscaled, and it answers them: both routers are healthy before the kill.
    await eventually(lambda: asyncio.sleep(0, s.server.pings.answered >= 4), 60)
    result["pings_answered"] = s.server.pings.answered
    assert s.server.router_health is not None
    result["unhealthy_before_kill"] = sorted(s.server.router_health.unhealthy)
    primary, other = (r1, r2) if result["first_primary"] == "router1" else (r2, r1)
    result["killed"], result["expected"] = primary.name, other.name
    assert primary.proc is not None
    if freeze:
        primary.proc.send_signal(signal.SIGSTOP)  # silent, but still connected
    else:
        primary.proc.kill()  # the primary router dies mid-transfer
    killed_at = time.monotonic()
    if not freeze:
        await primary.proc.wait()
    result["failover_primary"] = await eventually(lambda: _primary(c, not_=primary.name), 90)
    resumed = await eventually(lambda: asyncio.sleep(0, any(ok for t, ok in outcomes if t > killed_at)), 90)
    if freeze:
        result["still_connected"] = s.store.is_online(
            next(n.id for n in s.store.nodes.values() if n.hostname == primary.name)
        )
        primary.proc.send_signal(signal.SIGCONT)
        answered = s.server.pings.answered
        # It answers probes again (healthy), yet the route stays where it went.
        await eventually(lambda: asyncio.sleep(0, s.server.pings.answered >= answered + 4), 60)
        result["unhealthy_after_resume"] = sorted(s.server.router_health.unhealthy)
        result["primary_after_resume"] = await _primary(c)
    stop.set()
    await fetcher
    echo.close()
    result.update(
        resumed=bool(resumed),
        fetches_after_kill=sum(1 for t, _ in outcomes if t > killed_at),
        ok_before_kill=sum(1 for t, ok in outcomes if t <= killed_at and ok),
        server_primary=s.server.policy.primary_routes_of(
            next(n.id for n in s.store.nodes.values() if n.hostname == other.name)
        )
        if s.server.policy is not None
        else None,
    )
    return result


async def _primary(node: TailscaledNode, not_: str | None = None) -> str | None:
    name = primary_router(await node.status())
    return name if name is not None and name != not_ else None


TAGS_POLICY = {
    "groups": {"group:ops": ["bob@"]},
    "tagOwners": {"tag:web": ["alice@"], "tag:db": ["group:ops"]},
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}


async def interactive_up(s: Scenario, node: TailscaledNode, tag: str, user: str) -> dict[str, Any]:
    """`up --advertise-tags=<tag>` with no key; `auth register --user <user>` for its login; what followed."""
    up = await node.start_cli(
        "up", f"--login-server={s.url}", f"--hostname={node.name}", f"--advertise-tags={tag}"
    )
    logins = await eventually(
        lambda: asyncio.sleep(0, [p for p in s.server.logins.list() if p.hostname == node.name]), 60
    )
    result: dict[str, Any] = {"waited": bool(logins)}
    if logins:
        result["approval"] = await s.api(
            "POST", "/auth/register", {"auth_id": logins[0].auth_id, "user": user}
        )
    try:
        out, err = await asyncio.wait_for(up.communicate(), 60)
    except TimeoutError:
        up.kill()
        out, err = await up.communicate()
    result.update(up_exit=up.returncode, up_output=(out + err).decode()[-1500:])
    stored = next((n for n in s.store.nodes.values() if n.hostname == node.name), None)
    result["stored_tags"] = stored.tags if stored is not None else None
    with contextlib.suppress(Exception):
        result["self_tags"] = (await node.status())["Self"].get("Tags")
    return result


async def login_tags(s: Scenario) -> dict[str, Any]:
    assert s.server.policy is not None
    for name in ("alice", "bob"):
        await s.store.create_user(name)
    await s.server.policy.apply(json.dumps(TAGS_POLICY))
    owned, refused = await s.node("web1"), await s.node("db1")
    return {
        "owned": await interactive_up(s, owned, "tag:web", "alice"),
        "refused": await interactive_up(s, refused, "tag:db", "alice"),
    }


SCENARIOS: dict[str, Callable[[Scenario], Awaitable[dict[str, Any]]]] = {
    "taildrop": taildrop,
    "taildrop-disabled": taildrop_disabled,
    "ssh-check": ssh_check,
    "ssh-accept": ssh_accept,
    "ha-routes": ha_routes,
    "ha-routes-silent": functools.partial(ha_routes, freeze=True),
    "login-tags": login_tags,
}
CONFIG: dict[str, dict[str, Any]] = {
    "taildrop-disabled": {"taildrop": {"enabled": False}},
    "ha-routes": {"node": {"routes": {"ha": {"probe_interval": "2s", "probe_timeout": "1s"}}}},
    "ha-routes-silent": {"node": {"routes": {"ha": {"probe_interval": "2s", "probe_timeout": "1s"}}}},
}


async def main(name: str, workdir: Path, tailscaled: Path, tailscale: Path) -> dict[str, Any]:
    setup_loopback_only()
    scenario = Scenario(workdir, tailscaled, tailscale, CONFIG.get(name, {}))
    await scenario.server.start()
    result: dict[str, Any] = {"scenario": name}
    try:
        result.update(await asyncio.wait_for(SCENARIOS[name](scenario), 400))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        result["logs"] = scenario.log_tails()
        await scenario.close()
    return result


if __name__ == "__main__":
    scenario_name, work, daemon, cli = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    work.mkdir(parents=True, exist_ok=True)
    print(json.dumps(asyncio.run(main(scenario_name, work, daemon, cli))), flush=True)
