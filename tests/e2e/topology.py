"""A small internet of network namespaces for real-client scenarios: hosts, links, a bridge and NAT routers.

A lab driver runs under `unshare --net --mount --pid` (see `run_lab_driver`): all it builds lives inside
namespaces that vanish with it. Its own namespace is the *control host*: it owns the "internet" bridge
(`WAN`, 198.51.100.0/24) and runs pyheadscale with its DERP relay and STUN. Every other host is a named
namespace (`ip netns add`, its registry on a tmpfs at /run/netns private to the driver), joined to the
bridge or to a router by a veth pair. Addresses come only from the documentation ranges (192.0.2.0/24 for the
LANs behind NATs, 198.51.100.0/24 for the internet, 203.0.113.0/24 for a subnet behind a router) and no
namespace has a route to anything else, so nothing the clients send can leave.

The driver's mount namespace also overlays /etc with a tmpfs, so a tailscaled that manages DNS rewrites a
throwaway /etc/resolv.conf, never the machine's.

NAT routers are two-legged hosts with an nftables masquerade on the WAN leg and a stateful firewall that drops
whatever arrives unsolicited from the WAN, as home routers do. The drop matters for hole punching: a peer's
first probe would otherwise leave an inbound conntrack entry on the router that collides with the mapping of
the host's own outgoing probe, and the router would pick a new port for it; dropped at the input hook, the
probe's entry is never confirmed.

* `easy`: plain masquerade. Linux keeps the source port whenever it is free, so a LAN host's UDP socket gets
  one public ip:port whatever it talks to (endpoint-independent mapping): STUN learns the very endpoint a
  peer can punch through to.
* `symmetric`: `masquerade random`: every new flow (a new destination) gets a fresh random port
  (endpoint-dependent mapping), so the endpoint STUN saw is useless to a peer and two such nodes fall back to
  DERP.

Typical use, inside a driver (see tailscaled_driver.py):

    lab = Lab.enter(workdir)
    a = lab.behind_nat("a", nat="easy")          # host "a" at 192.0.2.18 behind router "nat-a"
    inet = lab.on_wan("inet", "198.51.100.80")
    a.run(["python3", "-c", "..."])              # runs inside a's namespace
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.netns import run_driver, unshare_available

WAN_BRIDGE = "wan"
WAN_NETWORK = ipaddress.IPv4Network("198.51.100.0/24")
CONTROL_ADDRESS = "198.51.100.1"
"""The control host (the driver's own namespace): pyheadscale, its DERP relay and STUN."""
LAN_SUPERNET = ipaddress.IPv4Network("192.0.2.0/24")
"""Cut into /28s, one per NATed LAN: the router takes .1 of it and the host behind it .2."""
NAT_KINDS = ("easy", "symmetric")


def _ip(*argv: str) -> None:
    _run(["ip", *argv])


def _run(argv: Sequence[str], *, input_text: str | None = None) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input_text, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


@dataclasses.dataclass
class Host:
    """One named network namespace. `address` is its address on its main link (LAN or WAN)."""

    name: str
    address: str = ""
    router: Host | None = None
    """The NAT router in front of this host, if it sits behind one."""
    ifname: str = ""
    """The interface of its main link."""

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], *, timeout: float = 30, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"[{self.name}] {' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
            )
        return proc

    async def arun(
        self, argv: Sequence[str], *, limit: float = 30, env: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        """Run to completion without blocking the event loop: (exit status, stdout, stderr); -9 on timeout."""
        proc = await asyncio.create_subprocess_exec(
            *self.argv(argv),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            return -9, out.decode(errors="replace"), err.decode(errors="replace")
        return int(proc.returncode or 0), out.decode(errors="replace"), err.decode(errors="replace")

    def sysctl(self, key: str, value: str) -> None:
        self.run(["sh", "-c", f"echo {value} > /proc/sys/{key.replace('.', '/')}"])


class Lab:
    """The namespaces of one driver run. Create with `Lab.enter` as the first thing inside the driver."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.hosts: dict[str, Host] = {}
        self._next_lan = 1
        self._next_wan = 10
        self._veths = 0

    @classmethod
    def enter(cls, workdir: Path) -> Lab:
        """Make the driver's namespaces private and build the control host with the WAN bridge.

        Must run inside `unshare --net --mount` (run_lab_driver does that): the mounts made here (/run/netns,
        the /etc overlay) are then invisible outside and vanish with the driver.
        """
        _run(["mount", "--make-rprivate", "/"])
        Path("/run/netns").mkdir(parents=True, exist_ok=True)
        _run(["mount", "-t", "tmpfs", "lab-netns", "/run/netns"])
        etc = workdir / "etc-overlay"
        etc.mkdir(parents=True, exist_ok=True)
        _run(["mount", "-t", "tmpfs", "lab-etc", str(etc)])
        (etc / "upper").mkdir()
        (etc / "work").mkdir()
        _run(
            [
                "mount", "-t", "overlay", "lab-etc-overlay",
                "-o", f"lowerdir=/etc,upperdir={etc / 'upper'},workdir={etc / 'work'}", "/etc",
            ]
        )  # fmt: skip
        Path("/etc/resolv.conf").unlink(missing_ok=True)
        Path("/etc/resolv.conf").write_text("# lab: no resolver outside the tailnet\n")
        _ip("link", "set", "lo", "up")
        _ip("link", "add", WAN_BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{CONTROL_ADDRESS}/{WAN_NETWORK.prefixlen}", "dev", WAN_BRIDGE)
        _ip("link", "set", WAN_BRIDGE, "up")
        return cls(workdir)

    def host(self, name: str) -> Host:
        """A new empty namespace (loopback up)."""
        if name in self.hosts:
            raise ValueError(f"host {name!r} exists")
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")
        self.hosts[name] = host = Host(name)
        return host

    def link(self, a: Host, a_if: str, a_addr: str, b: Host, b_if: str, b_addr: str) -> None:
        """A veth pair between two hosts, with an address (CIDR form) on each end."""
        self._veths += 1
        tmp_a, tmp_b = f"lv{self._veths}a", f"lv{self._veths}b"
        _ip("link", "add", tmp_a, "netns", a.name, "type", "veth", "peer", "name", tmp_b, "netns", b.name)
        for host, tmp, name, addr in ((a, tmp_a, a_if, a_addr), (b, tmp_b, b_if, b_addr)):
            _ip("-n", host.name, "link", "set", tmp, "name", name)
            _ip("-n", host.name, "addr", "add", addr, "dev", name)
            _ip("-n", host.name, "link", "set", name, "up")

    def wan_port(self, host: Host, ifname: str, address: str) -> None:
        """Plug `host` into the WAN bridge with `address` (no default route: the WAN is the whole world)."""
        self._veths += 1
        outer = f"wp{self._veths}"
        _ip("link", "add", outer, "type", "veth", "peer", "name", ifname, "netns", host.name)
        _ip("link", "set", outer, "master", WAN_BRIDGE, "up")
        _ip("-n", host.name, "addr", "add", f"{address}/{WAN_NETWORK.prefixlen}", "dev", ifname)
        _ip("-n", host.name, "link", "set", ifname, "up")

    def on_wan(self, name: str, address: str | None = None) -> Host:
        """A host straight on the internet segment (an "internet" server, a public DNS server)."""
        host = self.host(name)
        host.address, host.ifname = address or self._wan_address(), "eth0"
        self.wan_port(host, "eth0", host.address)
        return host

    def nat_router(self, name: str, nat: str) -> tuple[Host, ipaddress.IPv4Network]:
        """A NAT router on the WAN with a fresh /28 LAN behind it (no host on the LAN yet)."""
        if nat not in NAT_KINDS:
            raise ValueError(f"nat must be one of {NAT_KINDS}, not {nat!r}")
        lan = list(LAN_SUPERNET.subnets(new_prefix=28))[self._next_lan]
        self._next_lan += 1
        router = self.host(name)
        router.address = self._wan_address()
        self.wan_port(router, "wan0", router.address)
        router.sysctl("net.ipv4.ip_forward", "1")
        flags = " random" if nat == "symmetric" else ""
        ruleset = (
            "table ip nat {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "wan0" masquerade{flags}\n'
            "  }\n"
            "}\n"
            "table ip filter {\n"
            "  chain input {\n"
            "    type filter hook input priority filter; policy accept;\n"
            '    iifname "wan0" ct state new drop\n'
            "  }\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy drop;\n"
            '    iifname "wan0" ct state established,related accept\n'
            '    oifname "wan0" accept\n'
            "  }\n"
            "}\n"
        )
        _run(router.argv(["nft", "-f", "-"]), input_text=ruleset)
        return router, lan

    def behind_nat(self, name: str, nat: str = "easy") -> Host:
        """Host `name` alone on a LAN behind its own NAT router `nat-<name>`, its default route."""
        router, lan = self.nat_router(f"nat-{name}", nat)
        host = self.host(name)
        self.attach(host, router, lan, "eth0")
        return host

    def attach(self, host: Host, router: Host, lan: ipaddress.IPv4Network, ifname: str) -> None:
        """Put `host` on `router`'s LAN through interface `ifname` and route everything through the router."""
        gateway, address = lan[1], lan[2]
        self.link(router, "lan0", f"{gateway}/{lan.prefixlen}", host, ifname, f"{address}/{lan.prefixlen}")
        _ip("-n", host.name, "route", "replace", "default", "via", str(gateway), "dev", ifname)
        host.address, host.router, host.ifname = str(address), router, ifname

    def move_behind(self, host: Host, name: str, nat: str = "easy") -> Host:
        """Move `host` to a new network: a fresh NAT router and LAN, its old link gone; returns the router.

        The host sees what a laptop moving between networks sees: its interface and address change, and its
        public address with them.
        """
        old = host.ifname
        router, lan = self.nat_router(name, nat)
        self.attach(host, router, lan, f"eth{int(old.removeprefix('eth') or 0) + 1}")
        _ip("-n", host.name, "link", "del", old)
        return router

    def _wan_address(self) -> str:
        address = WAN_NETWORK[self._next_wan]
        self._next_wan += 1
        return str(address)

    def close(self) -> None:
        """Delete the namespaces (they would vanish with the driver anyway; this frees them early)."""
        for name in reversed(list(self.hosts)):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        self.hosts.clear()
        for mount in ("/etc", str(self.workdir / "etc-overlay")):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)


def run_lab_driver(driver: Path, args: list[str], *, timeout: float) -> dict[str, Any]:
    """Run `driver` under `unshare --net --mount --pid` and return the JSON object it prints last on stdout.

    Skips the test when private namespaces are unavailable (a real client could reach the internet) or
    nftables is not installed (the NATs need it).
    """
    reason = unshare_available()
    if reason is not None:
        pytest.skip(f"real-client test needs a private network namespace: {reason}")
    if subprocess.run(["sh", "-c", "command -v nft"], capture_output=True).returncode != 0:
        pytest.skip("the NAT routers need nftables (apt package nftables): nft is not installed")
    # A PID namespace too, with the driver as its init: however the driver ends (a timeout's SIGKILL
    # included), the kernel kills every daemon and server it started, wherever they were.
    flags = ["--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
    return run_driver(driver, args, timeout=timeout, unshare_flags=flags)
