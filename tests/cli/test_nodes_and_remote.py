"""CLI end to end: node verbs, remote use with an API key, clean failures in a real process."""

from __future__ import annotations

import base64
from pathlib import Path

from pyheadscale.tailkey import MachinePublic, NodePublic
from tests.cli.conftest import RunCli
from tests.live_server import LiveServer


async def test_nodes_list_and_manage(cli: RunCli, live: LiveServer) -> None:
    await cli("users", "create", "alice")
    await cli("users", "create", "bob")
    laptop = await live.add_node("laptop", user_id=1, routes=["10.0.0.0/8", "192.168.0.0/24"])
    await live.add_node("phone", user_id=2)
    listing = await cli("nodes", "list")
    lines = listing.out.splitlines()
    header = [cell.strip() for cell in lines[0].split("|")]
    assert listing.code == 0 and header[:7] == [
        "ID",
        "Hostname",
        "Name",
        "MachineKey",
        "NodeKey",
        "User",
        "Tags",
    ]
    assert len(lines) == 4 and "laptop" in lines[2] and "100.64.0.1" in lines[2] and "offline" in lines[2]
    # Keys are listed in Tailscale's short form (five base64 digits in brackets), as Headscale lists them.
    cells = [cell.strip() for cell in lines[2].split("|")]
    machine, node = MachinePublic.from_text(laptop.machine_key), NodePublic.from_text(laptop.node_key)
    assert cells[3:5] == [machine.short(), node.short()]
    assert cells[3] == "[" + base64.b64encode(bytes(machine)).decode()[:5] + "]"
    only_bob = (await cli("nodes", "list", "-u", "bob", "-o", "json")).json()
    assert [n["name"] for n in only_bob] == ["phone"]

    result = await cli("nodes", "rename", "-i", str(laptop.id), "work")
    assert result.code == 0 and live.store.nodes[laptop.id].given_name == "work"
    result = await cli("nodes", "move", "-i", str(laptop.id), "-u", "2")
    assert result.code == 0 and live.store.nodes[laptop.id].user_id == 2
    result = await cli("nodes", "approve-routes", "-i", str(laptop.id), "-r", "10.0.0.0/8", "-o", "json")
    assert result.code == 0 and result.json()["approved_routes"] == ["10.0.0.0/8"]
    routes = await cli("nodes", "list-routes")
    assert routes.code == 0 and "Serving (Primary)" in routes.out and "192.168.0.0/24" in routes.out
    assert [line.split("|")[0].strip() for line in routes.out.splitlines()[2:]] == [str(laptop.id)]
    result = await cli("nodes", "approve-routes", "-i", str(laptop.id), "-r", "")
    assert result.code == 0 and live.store.nodes[laptop.id].approved_routes == []
    result = await cli("nodes", "tag", "-i", str(laptop.id), "-t", "tag:web,tag:db")
    assert result.code == 0 and live.store.nodes[laptop.id].tags == ["tag:db", "tag:web"]
    result = await cli("nodes", "expire", "-i", str(laptop.id))
    assert result.code == 0 and live.store.is_expired(live.store.nodes[laptop.id])
    result = await cli("nodes", "expire", "-i", str(laptop.id), "--disable", "-o", "json")
    assert result.code == 0 and "expiry" not in result.json(), "omitempty: an unset expiry is left out"
    result = await cli("nodes", "delete", "-i", str(laptop.id), "--force")
    assert result.code == 0 and laptop.id not in live.store.nodes


async def test_node_errors(cli: RunCli, live: LiveServer) -> None:
    await cli("users", "create", "alice")
    node = await live.add_node("laptop", user_id=1)
    for argv, message in (
        (["nodes", "delete", "-i", "99", "--force"], "node 99 not found"),
        (["nodes", "expire"], "--identifier"),
        (["nodes", "tag", "-i", str(node.id), "-t", "web"], "must start with 'tag:'"),
        (["nodes", "approve-routes", "-i", str(node.id), "-r", "10.0.0.1/8"], "10.0.0.1/8"),
        (["nodes", "move", "-i", str(node.id), "-u", "nobody"], "user 'nobody' not found"),
        (["nodes", "rename", "-i", str(node.id), "bad_name"], "invalid node name"),
        (["nodes", "expire", "-i", str(node.id), "--expiry", "later"], "Failed to parse expiry field"),
        (["nodes", "register", "-u", "alice", "-k", "abc"], "no login is waiting"),
    ):
        result = await cli(*argv)
        assert result.code == 1 and message in result.err and "Traceback" not in result.err, (argv, result)
    result = await cli("nodes", "delete", "-i", str(node.id))
    assert result.code == 0 and result.out.endswith("Node not deleted\n") and node.id in live.store.nodes
    result = await cli("nodes", "delete", "-i", str(node.id), "-o", "json")
    assert result.json() == {"Result": "Node not deleted"} and node.id in live.store.nodes
    result = await cli("nodes", "delete", "-i", str(node.id), "--force", "-o", "json")
    assert result.json() == {"Result": "Node deleted"} and node.id not in live.store.nodes


async def test_remote_address_with_api_key(cli: RunCli, cli_process: RunCli, live: LiveServer) -> None:
    key = (await cli("apikeys", "create")).out.strip()
    env = {"HEADSCALE_CLI_ADDRESS": live.url, "HEADSCALE_CLI_API_KEY": key}
    result = await cli_process("users", "create", "remote", env=env, config=False)
    assert result.code == 0 and live.store.user_by_name("remote") is not None
    result = await cli_process(
        "--address", live.url, "--api-key", key, "users", "list", "-o", "json", config=False
    )
    assert result.code == 0 and '"name": "remote"' in result.out
    result = await cli_process(
        "--address", live.url, "--api-key", key[:-4] + "0000", "users", "list", config=False
    )
    assert result.code == 1 and result.err == "Error: invalid or expired API key\n"
    result = await cli_process(
        "--address", live.url, "users", "list", config=False, env={"HEADSCALE_CLI_API_KEY": ""}
    )
    assert result.code == 1 and "needs an API key" in result.err


async def test_unreachable_server_is_a_clean_error(cli_process: RunCli, tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.yaml"
    config.write_text(f"unix_socket: {tmp_path}/missing.sock\ndata_dir: {tmp_path}\n")
    result = await cli_process("-c", str(config), "nodes", "list", config=False)
    assert result.code == 1 and "cannot reach pyheadscale" in result.err and "Traceback" not in result.err
    result = await cli_process("users", "list", "-o", "json")
    assert result.code == 0 and result.out.strip() == "null", "no users: a nil Go slice, as Headscale prints"
