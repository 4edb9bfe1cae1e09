"""The official tailscaled against pyheadscale in a lab of namespaces, NATs and servers (see topology.py).

usage: tailscaled_driver.py --tailscaled BIN --tailscale BIN [--scenarios a,b,...] [--record DIR]
                            [--control pyheadscale|headscale --headscale BIN] [WORKDIR]

Runs under `unshare --net --mount` (topology.run_lab_driver). The driver's own namespace is the control
host (198.51.100.1): pyheadscale with its embedded DERP relay and STUN. Around it:

    inet     198.51.100.80   an "internet" host: whoami on :8001, a DNS server for corp.example
    a        behind easy NAT       (subnet router for 203.0.113.0/24 with `lanhost` behind it; exit node)
    b        behind easy NAT       (the client that uses a's routes, exit node and MagicDNS)
    c, d     each behind a symmetric NAT
    (more)   scenarios add hosts behind their own NATs as they need them

pyheadscale listens on 198.51.100.1:8080 (plain HTTP, which is also the DERP port) with a TLS front on :443
(tlsfront.py says why the clients need one); the daemons trust its throwaway CA through SSL_CERT_FILE.

Scenarios (tailscaled_scenarios.py) run in the order given on one shared lab, each recording what the CLI and
real traffic showed; a scenario that raises records its error and the rest still run. Prints one JSON line:
{"scenarios": {name: evidence}, "logs": {...}}. The assertions live in test_tailscaled.py.

With `--control headscale` the control host runs real Headscale v0.29.2 instead (headscale_control.py),
with the equivalent config and its own CLI for users, keys and approvals, so every scenario's behaviour can
be compared side by side (test_tailscaled_headscale.py).

WORKDIR keeps every log and state file for debugging (default: a temporary directory). To look around by
hand, end the list with the `hold` scenario (the lab stays up for ten minutes) and enter a host with
`nsenter -t <driver pid> -m -n ip netns exec b <tailscale> --socket=WORKDIR/b/tailscaled.sock status`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable by hand, without PYTHONPATH

from pyheadscale.app import Server
from pyheadscale.config import load_config
from pyheadscale.state.models import Node
from pyheadscale.state.store import Store
from tests.e2e.headscale_control import HeadscaleNode, HeadscaleServer, HeadscaleStore, write_headscale_config
from tests.e2e.tailscaled import Tailscaled
from tests.e2e.tlsfront import start_tls_front
from tests.e2e.topology import CONTROL_ADDRESS, Host, Lab
from tests.pki import make_pki

CONTROL_PORT = 8080
LOGIN_SERVER = f"http://{CONTROL_ADDRESS}:{CONTROL_PORT}"
INET_ADDRESS = "198.51.100.80"
SUBNET = "203.0.113.0/24"
ROUTER_SUBNET_ADDRESS = "203.0.113.1"
LANHOST_ADDRESSES = ("203.0.113.10", "203.0.113.200")
"""One address in each half of SUBNET: 203.0.113.0/25 is approved by the CLI, the other by autoApprovers."""
SPLIT_DNS_ZONE, SPLIT_DNS_ANSWER = "corp.example", "203.0.113.99"
BASE_DOMAIN = "tailnet.test"
EXTRA_RECORD = ("db.tailnet.test", "203.0.113.10")
WHOAMI_PORT, DENIED_PORT = 8001, 8999
EPHEMERAL_TIMEOUT = "5s"
HEADSCALE_EPHEMERAL_TIMEOUT = "66s"
"""Headscale v0.29.2 refuses to start with node.ephemeral.inactivity_timeout below 1m5s."""

POLICY = {
    "tagOwners": {"tag:server": ["alice@"]},
    "autoApprovers": {"routes": {"203.0.113.128/25": ["alice@"]}, "exitNode": ["alice@"]},
    # Everything may reach every node, subnet and the internet, but only on ports 8000-8099: DENIED_PORT is
    # what the policy-deny scenario tries.
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:8000-8099"]}],
}


class Run:
    """The lab, the server and the nodes of one driver run; what scenarios use."""

    def __init__(
        self, workdir: Path, lab: Lab, server: Server | HeadscaleServer, tailscaled: Path, tailscale: Path
    ) -> None:
        self.workdir, self.lab, self.server = workdir, lab, server
        self.binaries = {"tailscaled": tailscaled, "tailscale": tailscale}
        self.nodes: dict[str, Tailscaled] = {}
        self.services: list[asyncio.subprocess.Process] = []
        self.config_path = workdir / "config.yaml"
        self.keys: dict[str, str] = {}
        self.daemon_env: dict[str, str] = {}

    @property
    def store(self) -> Store | HeadscaleStore:
        assert self.server.store is not None
        return self.server.store

    def node(self, hostname: str) -> Node | HeadscaleNode | None:
        return next((n for n in self.store.nodes.values() if n.hostname == hostname), None)

    def is_expired(self, node: Node | HeadscaleNode) -> bool:
        """Whether the server counts the node's key as expired (each server by its own rule)."""
        if isinstance(node, HeadscaleNode):
            return HeadscaleStore.is_expired(node)
        return Store.is_expired(node)

    async def tailscaled(self, host: Host, name: str | None = None) -> Tailscaled:
        """Start a tailscaled on `host` (named after it unless told otherwise)."""
        daemon = Tailscaled(host, name or host.name, self.workdir, **self.binaries, extra_env=self.daemon_env)
        await daemon.start()
        self.nodes[daemon.name] = daemon
        return daemon

    async def pyheadscale(self, *args: str) -> tuple[int, str]:
        """The operator CLI against this server (over its unix socket): exit status and output.

        Against Headscale, Headscale's own CLI: the subcommands and flags the scenarios use are the same.
        """
        if isinstance(self.server, HeadscaleServer):
            argv = self.server.cli_argv()
        else:
            argv = [sys.executable, "-m", "pyheadscale", "-c", str(self.config_path)]
        proc = await asyncio.create_subprocess_exec(
            *argv, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return int(proc.returncode or 0), out.decode(errors="replace")

    async def service(self, host: Host, *args: str) -> None:
        """A labservices server on `host`, waited for until it says it is ready."""
        proc = await asyncio.create_subprocess_exec(
            *host.argv([sys.executable, "-m", "tests.e2e.labservices", *args]),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self.services.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"{args[0]} on {host.name} did not start: {line!r}")

    async def whoami(
        self, host: Host, address: str, port: int = WHOAMI_PORT, limit: float = 5
    ) -> dict[str, Any]:
        """Connect from `host` to a whoami server: {"ok", "seen_as": the source it saw, or the error}."""
        status, out, err = await host.arun(
            [sys.executable, "-m", "tests.e2e.labservices", "whoami", address, str(port), str(limit)],
            limit=limit + 20,
        )
        return {"ok": status == 0, "seen_as": (out or err).strip()}

    async def eventually(
        self, probe: Callable[[], Awaitable[dict[str, Any]]], limit: float = 30
    ) -> dict[str, Any]:
        """Retry a whoami-style probe until it is ok (routes and filters reach clients asynchronously)."""
        deadline = time.monotonic() + limit
        while True:
            result = await probe()
            if result["ok"] or time.monotonic() > deadline:
                return result
            await asyncio.sleep(1)

    async def wait_store(self, predicate: Callable[[], bool], limit: float = 30) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.3)
        return predicate()


DNS = {
    "magic_dns": True,
    "base_domain": BASE_DOMAIN,
    "override_local_dns": False,
    "nameservers": {"global": [], "split": {SPLIT_DNS_ZONE: [INET_ADDRESS]}},
    "extra_records": [{"name": EXTRA_RECORD[0], "type": "A", "value": EXTRA_RECORD[1]}],
}


def policy_file(workdir: Path) -> Path:
    policy = workdir / "policy.json"
    policy.write_text(json.dumps(POLICY, indent=2))
    return policy


def server_config(workdir: Path) -> Path:
    """pyheadscale's config.yaml for the lab: what an operator would write for this network."""
    policy = policy_file(workdir)
    config = {
        "server_url": LOGIN_SERVER,
        "listen_addr": f"{CONTROL_ADDRESS}:{CONTROL_PORT}",
        "metrics_listen_addr": "",
        "data_dir": str(workdir / "server"),
        "derp": {
            "server": {
                "enabled": True,
                "stun_listen_addr": f"{CONTROL_ADDRESS}:3478",
                "ipv4": CONTROL_ADDRESS,
            },
            "urls": [],
            "paths": [],
        },
        "node": {"ephemeral": {"inactivity_timeout": EPHEMERAL_TIMEOUT}},
        "policy": {"mode": "file", "path": str(policy)},
        "dns": DNS,
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def build_lab(lab: Lab) -> dict[str, Host]:
    """The hosts of the docstring, wired up."""
    hosts = {"inet": lab.on_wan("inet", INET_ADDRESS)}
    for name, nat in (("a", "easy"), ("b", "easy"), ("c", "symmetric"), ("d", "symmetric")):
        hosts[name] = lab.behind_nat(name, nat)
    router, lanhost = hosts["a"], lab.host("lanhost")
    lab.link(router, "sub0", f"{ROUTER_SUBNET_ADDRESS}/24", lanhost, "eth0", f"{LANHOST_ADDRESSES[0]}/24")
    lanhost.run(["ip", "addr", "add", f"{LANHOST_ADDRESSES[1]}/24", "dev", "eth0"])
    lanhost.address = LANHOST_ADDRESSES[0]
    router.sysctl("net.ipv4.ip_forward", "1")
    hosts["lanhost"] = lanhost
    return hosts


Scenario = Callable[[Run], Awaitable[dict[str, Any]]]


def scenario_function(name: str) -> Scenario:
    """A scenario by name: one of tailscaled_scenarios.py, or `package.module:function` kept elsewhere.

    The second form is how other features' tests reuse this lab: their scenarios take the `Run` and return
    evidence like these, and their tests call run_lab_driver with `--scenarios join,my.module:my_scenario`.
    """
    module_name, _, function = name.rpartition(":")
    module = importlib.import_module(module_name or "tests.e2e.tailscaled_scenarios")
    found: Scenario = getattr(module, function)
    return found


async def main(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    try:
        scenarios = [(name, scenario_function(name)) for name in args.scenarios]
    except (ImportError, AttributeError, ValueError) as exc:
        return {"error": f"unknown scenario: {exc}", "scenarios": {}}
    lab = Lab.enter(workdir)
    result: dict[str, Any] = {"scenarios": {}}
    if args.record:
        os.environ["PYHEADSCALE_RECORD_DIR"] = str(args.record)
    server: Server | HeadscaleServer
    if args.control == "headscale":
        server = HeadscaleServer(
            args.headscale,
            write_headscale_config(
                workdir / "headscale",
                server_url=LOGIN_SERVER,
                listen_addr=f"{CONTROL_ADDRESS}:{CONTROL_PORT}",
                control_address=CONTROL_ADDRESS,
                policy=policy_file(workdir),
                dns=DNS,
                ephemeral_timeout=HEADSCALE_EPHEMERAL_TIMEOUT,
            ),
            f"{LOGIN_SERVER}/health",
        )
    else:
        config, _ = load_config(server_config(workdir))
        server = Server(config)
    await server.start()
    run = Run(workdir, lab, server, args.tailscaled, args.tailscale)
    tls = make_pki(workdir / "tls", [], [CONTROL_ADDRESS])
    front = await start_tls_front(CONTROL_ADDRESS, 443, (CONTROL_ADDRESS, CONTROL_PORT), tls.cert, tls.key)
    run.daemon_env["SSL_CERT_FILE"] = str(tls.ca_cert)
    try:
        run.lab.hosts.update(build_lab(lab))
        await run.service(lab.hosts["inet"], "serve-whoami", "0.0.0.0", str(WHOAMI_PORT))
        await run.service(lab.hosts["inet"], "serve-dns", INET_ADDRESS, SPLIT_DNS_ZONE, SPLIT_DNS_ANSWER)
        await run.service(lab.hosts["lanhost"], "serve-whoami", "0.0.0.0", str(WHOAMI_PORT))
        if isinstance(server, HeadscaleServer):
            alice = await server.create_user("alice")
            run.keys["alice"] = await server.create_preauth_key(alice, "--reusable")
            run.keys["ephemeral"] = await server.create_preauth_key(alice, "--reusable", "--ephemeral")
            run.keys["tagged"] = await server.create_preauth_key(None, "--reusable", "--tags", "tag:server")
        else:
            assert server.store is not None
            user = await server.store.create_user("alice")
            _, run.keys["alice"] = await server.store.create_preauth_key(user.id, reusable=True)
            _, run.keys["ephemeral"] = await server.store.create_preauth_key(
                user.id, reusable=True, ephemeral=True
            )
            _, run.keys["tagged"] = await server.store.create_preauth_key(
                None, reusable=True, tags=["tag:server"]
            )
        for name, scenario in scenarios:
            started = time.monotonic()
            evidence: dict[str, Any] = {}
            try:
                evidence = await asyncio.wait_for(scenario(run), 240)
            except Exception as exc:  # one scenario's failure is evidence; the next still runs
                evidence = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()[-3000:],
                }
            evidence["seconds"] = round(time.monotonic() - started, 1)
            result["scenarios"][name] = evidence
            print(f"scenario {name}: {'error' if 'error' in evidence else 'done'} in {evidence['seconds']} s",
                  file=sys.stderr, flush=True)  # fmt: skip
        return result
    finally:
        failed = any("error" in e for e in result["scenarios"].values())
        for daemon in run.nodes.values():
            if failed:
                result.setdefault("logs", {})[daemon.name] = daemon.log_tail(3000)
            await daemon.stop()
        if failed and isinstance(server, HeadscaleServer):
            result.setdefault("logs", {})["headscale"] = server.log_tail(6000)
        for proc in run.services:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        front.close()
        await server.stop()
        lab.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tailscaled", type=Path, required=True)
    parser.add_argument("--tailscale", type=Path, required=True)
    parser.add_argument("--scenarios", type=lambda s: s.split(","), default=["join", "direct"])
    parser.add_argument("--control", choices=("pyheadscale", "headscale"), default="pyheadscale")
    parser.add_argument("--headscale", type=Path, help="the headscale binary, for --control headscale")
    parser.add_argument("--record", type=Path, help="record every client's decrypted requests here")
    parser.add_argument("workdir", nargs="?", type=Path, help="keep logs and state here (default: a tmp dir)")
    return parser.parse_args()


def run_main() -> None:
    args = parse_args()
    if args.control == "headscale" and args.headscale is None:
        raise SystemExit("--control headscale needs --headscale BIN")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(filename=args.workdir / "server.log", level=logging.INFO)
        print(json.dumps(asyncio.run(main(args, args.workdir.resolve()))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(args, Path(tmp)))))


if __name__ == "__main__":
    run_main()
