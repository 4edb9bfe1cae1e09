"""`policy get|set` against a running server, and `/api/v1/policy` in both policy modes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import RunCli
from tests.live_server import LiveServer

POLICY = {"acls": [{"action": "accept", "src": ["alice@"], "dst": ["*:22"]}]}


async def test_set_then_get_in_database_mode(live: LiveServer, cli: RunCli, tmp_path: Path) -> None:
    live.server.config = live.server.config.model_copy(
        update={"policy": live.server.config.policy.model_copy(update={"mode": "database"})}
    )
    assert live.server.policy is not None
    live.server.policy.config = live.server.config
    await live.store.create_user("alice")
    empty = await cli("policy", "get", "-o", "json")
    assert (empty.code, empty.out) == (0, "\n"), "Headscale prints the policy text as is, whatever -o says"

    good = tmp_path / "policy.hujson"
    good.write_text("// ssh only\n" + json.dumps(POLICY))
    result = await cli("policy", "set", "-f", str(good))
    assert result.code == 0, result.err
    got = await cli("policy", "get")
    assert got.out == good.read_text() + "\n"
    checked = await cli("policy", "check", "-f", str(good))
    assert (checked.code, checked.out) == (0, "Policy is valid\n"), checked.err

    bad = tmp_path / "bad.hujson"
    bad.write_text('{"acls": [{"action": "accept", "src": ["group:nope"], "dst": ["*:*"]}]}')
    refused = await cli("policy", "set", "-f", str(bad))
    assert refused.code == 1 and "group:nope" in refused.err
    assert (await cli("policy", "get", "-o", "json")).out == good.read_text() + "\n"
    refused = await cli("policy", "check", "-f", str(bad))
    assert refused.code == 1 and "group:nope" in refused.err

    missing = await cli("policy", "set", "-f", str(tmp_path / "nope.hujson"))
    assert missing.code == 1 and "nope.hujson" in missing.err


async def test_set_is_refused_in_file_mode(live: LiveServer, cli: RunCli, tmp_path: Path) -> None:
    policy = tmp_path / "policy.hujson"
    policy.write_text(json.dumps(POLICY))
    result = await cli("policy", "set", "-f", str(policy))
    assert result.code == 1 and "policy.mode is 'file'" in result.err
