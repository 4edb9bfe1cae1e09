"""Verbs and flags as Headscale's CLI has them: -c after the verb, version/generate -o json, completion,
nodes rename without a name, policy aliases."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import RunCli
from tests.live_server import LiveServer


async def test_config_flag_after_the_verb(cli_process: RunCli, config_file: Path) -> None:
    await cli_process("users", "create", "alice")
    result = await cli_process("users", "list", "-c", str(config_file), "-o", "json", config=False)
    assert result.code == 0 and json.loads(result.out)[0]["name"] == "alice"
    result = await cli_process("nodes", "list", "-c", "/nonexistent/config.yaml", config=False)
    assert result.code == 1 and "/nonexistent/config.yaml" in result.err


async def test_version_and_generate_in_machine_formats(cli: RunCli) -> None:
    version = (await cli("version", "-o", "json")).json()
    assert set(version) == {"version", "commit", "buildTime", "go", "dirty"}
    assert (await cli("version")).out.startswith("pyheadscale version ")
    key = (await cli("gen", "private-key", "-o", "json")).json()
    assert set(key) == {"private_key"} and re.fullmatch(r"privkey:[0-9a-f]{64}", key["private_key"])
    plain = (await cli("generate", "private-key")).out.strip()
    assert re.fullmatch(r"privkey:[0-9a-f]{64}", plain)


def test_completion_scripts_name_the_verbs() -> None:
    for shell in ("bash", "zsh", "fish"):
        out = subprocess.run(
            [sys.executable, "-m", "pyheadscale", "completion", shell],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "preauthkeys" in out and "approve-routes" in out, shell
    if sys.platform.startswith("linux"):
        bash = subprocess.run(
            [sys.executable, "-m", "pyheadscale", "completion", "bash"], capture_output=True, timeout=60
        ).stdout
        checked = subprocess.run(["bash", "-n"], input=bash, capture_output=True, timeout=60)
        assert checked.returncode == 0, checked.stderr


async def test_rename_without_a_name_takes_the_hostname_again(cli: RunCli, live: LiveServer) -> None:
    await cli("users", "create", "alice")
    node = await live.add_node("Work-Laptop", user_id=1)
    assert (await cli("nodes", "rename", "-i", str(node.id), "other")).code == 0
    assert live.store.nodes[node.id].given_name == "other"
    result = await cli("nodes", "rename", "-i", str(node.id), "-o", "json")
    assert result.code == 0, result.err
    assert result.json()["given_name"] == "work-laptop" and result.json()["name"] == "Work-Laptop"


async def test_policy_aliases(cli: RunCli, live: LiveServer, tmp_path: Path) -> None:
    for alias in ("get", "show", "view", "fetch"):
        result = await cli("policy", alias)
        assert result.code == 0, (alias, result.err)
    policy = tmp_path / "p.json"
    policy.write_text('{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}')
    for alias in ("set", "put", "update"):
        result = await cli("policy", alias, "-f", str(policy))
        assert result.code == 1 and "policy.mode is 'file'" in result.err, (alias, result)
    assert (await cli("policy", "check", str(policy))).code == 0, "offline check still works"
