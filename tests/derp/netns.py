"""Run a program inside a private, loopback-only network namespace.

Real Tailscale clients probe the network (STUN, netcheck, port mapping); in
a fresh namespace from ``unshare -n`` nothing they send can leave the
machine.  The program started in the namespace calls :func:`setup_loopback`
first, then starts every server and client of its scenario itself.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_NET_ADDRESS = "192.0.2.1/32"
"""A TEST-NET-1 address on loopback, so clients see a non-loopback interface address."""

SAFE_CLIENT_ENV = {"TS_NO_LOGS_NO_SUPPORT": "true", "TS_DISABLE_PORTMAPPER": "1"}
"""Environment that keeps Tailscale-based clients from phoning home or mapping ports."""


@functools.cache
def netns_unavailable_reason() -> str | None:
    """None if ``unshare -n`` works here, else why not (for pytest.skip)."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed"
    try:
        probe = subprocess.run(
            ["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -n failed: {exc}"
    if probe.returncode != 0:
        return f"unshare -n not permitted here: {probe.stderr.decode(errors='replace').strip()}"
    return None


def setup_loopback() -> None:
    """Bring up ``lo`` and add the test address; call first thing inside the namespace."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", TEST_NET_ADDRESS, "dev", "lo"], check=True)


def run_python_in_private_netns(
    script: Path, args: Sequence[str] = (), *, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python script args...`` under ``unshare -n`` with the repo importable."""
    full_env = {**os.environ, **SAFE_CLIENT_ENV, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
    return subprocess.run(
        ["unshare", "-n", sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )
