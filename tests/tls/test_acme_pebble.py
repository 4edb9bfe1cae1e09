"""ACME (tls_letsencrypt_*) against Pebble, validated for real by HTTP-01 and TLS-ALPN-01 (acme_driver.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.netns import CLIENT_ENV, REPO, unshare_available

HERE = Path(__file__).parent

pytestmark = pytest.mark.realclient


def run_in_namespaces(pebble: Path) -> dict[str, Any]:
    """The driver under `unshare -n -m`: its own network (loopback only) and its own /etc/hosts."""
    reason = unshare_available()
    if reason is not None:
        pytest.skip(f"the ACME test needs a private network namespace: {reason}")
    env = dict(os.environ, **CLIENT_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    driver = str(HERE / "acme_driver.py")
    command = ["unshare", "-n", "-m", "--propagation", "private", sys.executable, driver]
    proc = subprocess.run(
        [*command, str(pebble)], capture_output=True, text=True, timeout=400, env=env, cwd=REPO
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError(f"driver printed no result (exit {proc.returncode})\n{proc.stderr[-8000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_certificates_from_pebble_by_http01_and_tls_alpn01(reference_binary: Callable[[str], Path]) -> None:
    result = run_in_namespaces(reference_binary("pebble"))
    assert result["ok"], result
    assert result["http01_issued"], result
    assert result["client_online"], "a tsnet node trusting Pebble's root joined over https://"
    assert result["http_redirect"] == [308, "https://hs.example.com/health"], result
    assert result["cached_serial_same"], "a restart serves the cached certificate"
    assert result["renewed"], "a certificate inside its renewal window is replaced"
    assert result["tls_alpn01_issued"], result
