"""Running a scenario inside a private, loopback-only network namespace.

Real Tailscale clients left to their defaults reach for Tailscale's public servers and the gateway. Every
scenario with a real client therefore runs as one driver process under `unshare -n`: the driver, the servers
and relays it starts and the clients it spawns share a namespace whose only interface is `lo` (with a
documentation address, so tsnet believes the network is up). Nothing inside can send a packet anywhere else.

Used by the tsnet (Caddy) scenarios here and by the tailcat scenario in tests/derp.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

TEST_NET_ADDRESS = "192.0.2.1/32"
"""A TEST-NET-1 address on loopback, so clients see a non-loopback interface address."""

# What every real client gets in its environment (see DEVELOPERS.md / shared/DESIGN.md section 2).
CLIENT_ENV = {
    "TS_NO_LOGS_NO_SUPPORT": "true",
    "TS_DISABLE_PORTMAPPER": "1",
    "TS_ASSUME_NETWORK_UP_FOR_TEST": "1",
    "TS_DEBUG_USE_DERP_HTTP": "1",
    "TS_VERBOSE": "1",
}


@functools.cache
def unshare_available() -> str | None:
    """None when private namespaces work here, else the reason they do not."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) is not installed"
    try:
        probe = subprocess.run(
            ["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -n failed: {exc}"
    if probe.returncode != 0:
        return f"unshare -n is not permitted here: {probe.stderr.strip()}"
    return None


def setup_loopback_only() -> None:
    """Called first thing inside the namespace by a driver."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", TEST_NET_ADDRESS, "dev", "lo"], check=True)


def run_driver(
    driver: Path, args: list[str], *, timeout: float, unshare_flags: Sequence[str] = ("-n",)
) -> dict[str, Any]:
    """Run `driver` under `unshare <unshare_flags>` and return the JSON object it prints last on stdout.

    Skips the test when private namespaces are unavailable: without one a real client could reach the
    internet. The driver's environment carries CLIENT_ENV, so nothing it spawns phones home if it forgets.
    """
    reason = unshare_available()
    if reason is not None:
        pytest.skip(f"real-client test needs a private network namespace: {reason}")
    env = dict(os.environ, **CLIENT_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        ["unshare", *unshare_flags, sys.executable, str(driver), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError(
            f"driver printed no result (exit {proc.returncode})\nstdout:\n{proc.stdout[-4000:]}\n"
            f"stderr:\n{proc.stderr[-8000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    result["_stderr"] = proc.stderr[-8000:]
    return result
