"""`pyheadscale serve` re-reads its policy file on SIGHUP; a broken file leaves the policy in force."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.control.test_crash import REPO, start_process
from tests.ports import free_port

SSH = {"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}]}
WEB = {"acls": [{"action": "accept", "src": ["*"], "dst": ["*:80"]}]}


def cli(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyheadscale", "-c", str(config), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


async def wait_for_log(log: Path, text: str, count: int) -> None:
    """Until the server's log (another process writes it, so it is polled) holds `text` `count` times."""
    for _ in range(200):
        if (await asyncio.to_thread(log.read_text)).count(text) >= count:
            return
        await asyncio.sleep(0.05)
    tail = (await asyncio.to_thread(log.read_text))[-2000:]
    raise AssertionError(f"{text!r} not logged {count} time(s):\n{tail}")


async def test_sighup_reloads_the_policy_file(tmp_path: Path) -> None:
    port = free_port()
    policy = tmp_path / "policy.hujson"
    policy.write_text(json.dumps(SSH))
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server_url": f"http://127.0.0.1:{port}",
                "listen_addr": f"127.0.0.1:{port}",
                "metrics_listen_addr": "",
                "unix_socket": str(tmp_path / "phs.sock"),
                "derp": {"server": {"enabled": False}},
                "policy": {"mode": "file", "path": str(policy)},
                "log": {"level": "info"},
            }
        )
    )
    log = tmp_path / "server.log"
    proc = await start_process(config, port, log)
    try:
        policy.write_text("{ not a policy")
        proc.send_signal(signal.SIGHUP)
        await wait_for_log(log, "SIGHUP: re-reading the policy file", 1)
        await wait_for_log(log, "the previous policy stays in force", 1)
        assert cli(config, "policy", "get", "-o", "json").stdout == json.dumps(SSH) + "\n"

        policy.write_text(json.dumps(WEB))
        proc.send_signal(signal.SIGHUP)
        await wait_for_log(log, "SIGHUP: re-reading the policy file", 2)
        await wait_for_log(log, "policy in force: ", 1)
        assert cli(config, "policy", "get", "-o", "json").stdout == json.dumps(WEB) + "\n"
        assert proc.poll() is None, "the server keeps running through a bad reload"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
