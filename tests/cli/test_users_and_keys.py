"""CLI end to end: users, preauth keys, API keys and health against a live server over its unix socket."""

from __future__ import annotations

import re

import yaml

from tests.cli.conftest import RunCli
from tests.live_server import LiveServer


async def test_users_create_list_rename_destroy(cli: RunCli, live: LiveServer) -> None:
    result = await cli("users", "create", "alice", "--display-name", "Alice A", "--email", "a@example.com")
    assert (result.code, result.out, result.err) == (0, "User created\n", "")
    result = await cli("users", "list")
    assert result.code == 0
    header, _rule, row = result.out.splitlines()
    assert [cell.strip() for cell in header.split("|")][:4] == ["ID", "Name", "Username", "Email"]
    assert [cell.strip() for cell in row.split("|")][:4] == ["1", "Alice A", "alice", "a@example.com"]
    result = await cli("users", "rename", "--name", "alice", "--new-name", "alicia")
    assert result.code == 0 and live.store.users[1].name == "alicia"
    result = await cli("users", "rename", "-i", "1", "-r", "ally", "-o", "json")
    assert result.code == 0 and result.json()["name"] == "ally"
    result = await cli("users", "destroy", "--identifier", "1", stdin="n\n")
    assert result.code == 0 and result.out.endswith("User not destroyed\n") and 1 in live.store.users
    result = await cli("users", "destroy", "--identifier", "1", stdin="y\n")
    assert result.code == 0 and live.store.users == {}


async def test_machine_output_formats_are_headscales(cli: RunCli) -> None:
    """Go's encoding/json of the structs: numeric ids, {seconds, nanos} times, zero values left out;
    yaml.v3: every field, keys the Go field names in lower case."""
    await cli("users", "create", "alice")
    as_json = (await cli("users", "list", "-o", "json")).json()
    assert as_json[0]["name"] == "alice" and as_json[0]["id"] == 1
    assert set(as_json[0]["created_at"]) <= {"seconds", "nanos"} and "display_name" not in as_json[0]
    line = await cli("-o", "json-line", "users", "list")
    assert line.out.count("\n") == 1 and line.out.startswith('[{"id":1,"name":"alice","created_at":{')
    as_yaml = yaml.safe_load((await cli("users", "list", "-o", "yaml")).out)
    assert as_yaml[0]["id"] == 1 and as_yaml[0]["displayname"] == "" and "seconds" in as_yaml[0]["createdat"]


async def test_user_errors_are_clear_and_exit_nonzero(cli: RunCli) -> None:
    await cli("users", "create", "alice")
    result = await cli("users", "create", "alice")
    assert result.code == 1 and result.err == "Error: user 'alice' already exists\n" and result.out == ""
    result = await cli("users", "destroy", "--name", "nobody", "--force")
    assert result.code == 1 and "user 'nobody' not found" in result.err
    result = await cli("users", "destroy", "--force")
    assert result.code == 1 and "--identifier ID or --name NAME" in result.err
    result = await cli("users", "create", "alice", "-o", "json")
    assert result.code == 1 and '"error": "user \'alice\' already exists"' in result.err


async def test_preauthkeys(cli: RunCli, live: LiveServer) -> None:
    await cli("users", "create", "alice")
    result = await cli("preauthkeys", "create", "-u", "1", "--reusable", "--expiration", "2h")
    assert result.code == 0
    key = result.out.strip()
    assert re.fullmatch(r"hskey-auth-[0-9a-f]{12}-[0-9a-f]{64}", key)
    assert live.store.find_preauth_key(key).reusable
    tagged = (await cli("preauthkeys", "create", "--tags", "tag:a,tag:b", "--ephemeral", "-o", "json")).json()
    assert tagged["acl_tags"] == ["tag:a", "tag:b"] and tagged["ephemeral"] and "user" not in tagged
    listing = await cli("preauthkeys", "list")
    assert listing.code == 0 and key not in listing.out and key[:23] + "-***" in listing.out
    assert "tag:a, tag:b" in listing.out
    only_alice = (await cli("preauthkeys", "list", "-u", "alice", "-o", "json")).json()
    assert [k["id"] for k in only_alice] == [1]
    assert (await cli("preauthkeys", "expire", "--id", "1")).code == 0
    assert live.store.preauth_keys[1].expiration is not None
    result = await cli("preauthkeys", "expire", "-u", "alice", "--key", key)
    assert result.code == 0
    assert (await cli("preauthkeys", "delete", "--id", "2")).code == 0
    assert set(live.store.preauth_keys) == {1}


async def test_preauthkey_errors(cli: RunCli) -> None:
    await cli("users", "create", "alice")
    result = await cli("preauthkeys", "create", "-u", "1", "--tags", "Server")
    assert result.code == 1 and "must start with 'tag:'" in result.err
    result = await cli("preauthkeys", "create", "-u", "1", "--expiration", "soon")
    assert result.code == 1 and "--expiration" in result.err
    result = await cli("preauthkeys", "create")
    assert result.code == 1 and "needs a user" in result.err
    result = await cli("preauthkeys", "create", "-u", "nobody")
    assert result.code == 1 and "user 'nobody' not found" in result.err
    result = await cli("preauthkeys", "expire", "--id", "9")
    assert result.code == 1 and "preauth key 9 not found" in result.err
    result = await cli("preauthkeys", "delete")
    assert result.code == 1 and "which key?" in result.err


async def test_apikeys(cli: RunCli, live: LiveServer) -> None:
    result = await cli("apikeys", "create", "--expiration", "30d")
    key = result.out.strip()
    match = re.fullmatch(r"hskey-api-([0-9a-f]{12})-[0-9a-f]{64}", key)
    assert result.code == 0 and match is not None and live.store.authenticate_api_key(key) is not None
    listing = await cli("apikeys", "list")
    assert f"hskey-api-{match.group(1)}-***" in listing.out and key not in listing.out
    assert (await cli("apikeys", "expire", "--prefix", match.group(1))).code == 0
    assert live.store.authenticate_api_key(key) is None
    second = (await cli("apikeys", "create")).out.strip()
    assert (await cli("apikeys", "delete", "--id", "2")).code == 0
    assert live.store.authenticate_api_key(second) is None and list(live.store.api_keys) == [1]
    result = await cli("apikeys", "delete", "--prefix", "000000000000")
    assert result.code == 1 and "not found" in result.err
    result = await cli("apikeys", "expire")
    assert result.code == 1 and "--prefix" in result.err


async def test_health(cli: RunCli) -> None:
    result = await cli("health")
    assert (result.code, result.out) == (0, "database connectivity: ok\n")
    assert (await cli("health", "-o", "json")).json() == {"database_connectivity": True}
