"""`debug create-node` and `dump-config`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from tests.cli.conftest import RunCli
from tests.live_server import LiveServer

AUTH_ID = "hskey-authreq-" + "ab" * 12


async def test_created_node_registers_with_auth_register(live: LiveServer, cli: RunCli) -> None:
    await live.store.create_user("alice")
    created = await cli(
        "debug",
        "create-node",
        "--name",
        "router",
        "-u",
        "alice",
        "-k",
        AUTH_ID,
        "-r",
        "10.1.0.0/16",
        "-o",
        "json",
    )
    assert created.code == 0, created.err
    assert created.json()["available_routes"] == ["10.1.0.0/16"]
    registered = await cli("auth", "register", "--auth-id", AUTH_ID, "--user", "alice", "-o", "json")
    assert registered.code == 0, registered.err
    node = next(iter(live.store.nodes.values()))
    assert node.hostname == "router" and node.announced_routes == ["10.1.0.0/16"]

    again = await cli("debug", "create-node", "--name", "x", "-u", "alice", "-k", "not-an-auth-id")
    assert again.code == 1 and "must start with 'hskey-authreq-'" in again.err
    bad_route = await cli(
        "debug", "create-node", "--name", "x", "-u", "alice", "-k", AUTH_ID, "-r", "10.1.0.1/16"
    )
    assert bad_route.code == 1 and "not an IP prefix" in bad_route.err


async def test_dump_config_prints_effective_settings_with_secrets_masked(
    cli: RunCli, config_file: Path
) -> None:
    raw = yaml.safe_load(await asyncio.to_thread(config_file.read_text))
    raw["oidc"] = {
        "issuer": "https://idp.example",
        "client_id": "pyheadscale",
        "client_secret": "s3cret-value",
        "only_start_if_oidc_is_available": False,
    }
    await asyncio.to_thread(config_file.write_text, yaml.safe_dump(raw))
    result = await cli("dump-config")
    assert result.code == 0, result.err
    dumped = yaml.safe_load(result.out)
    assert dumped["server_url"] == raw["server_url"]
    assert dumped["prefixes"]["v4"] == "100.64.0.0/10", "defaults are filled in"
    assert "s3cret-value" not in result.out


async def test_backfillips_needs_confirmation(live: LiveServer, cli: RunCli) -> None:
    refused = await cli("nodes", "backfillips", stdin="n\n")
    assert refused.code == 1 and "not confirmed" in refused.err
    forced = await cli("nodes", "backfillips", "--force", "-o", "json")
    assert forced.code == 0, forced.err
    # Headscale's CLI prints the list of changes: an empty one is a nil Go slice, `null`.
    assert forced.json() is None and forced.out == "null\n"
