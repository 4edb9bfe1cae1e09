"""Replaying what tailscaled v1.90.9 sent during a Tailscale SSH check (fixtures/tailscaled-1.90.9-ssh-check).

Recorded from tests/e2e/features_driver.py's ssh-check scenario with PYHEADSCALE_RECORD_DIR: the source node
registers and polls; the destination (running `--ssh`) does too, then asks the SSH action URL, follows the
HoldAndDelegate URL with the auth id, and, after the approval, asks again within checkPeriod. We send the same
requests, with live keys, node ids and auth id substituted, and check each answer is what tailscaled needs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.e2e.features_driver import SSH_CHECK_POLICY
from tests.live_server import ClientNode, LiveServer, MapReader

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "tailscaled-1.90.9-ssh-check"


def load(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


async def join(
    live: LiveServer, entries: list[dict[str, Any]], auth_key: str, readers: list[MapReader]
) -> ClientNode:
    """Replay a node's register and map requests; returns it once its map stream has sent the full map."""
    machine_key, node_key = MachinePrivate.generate(), NodePrivate.generate()
    client = await live.client(machine_key)
    node_key_text = node_key.public().text
    register: dict[str, Any] = {}
    for entry in entries:
        if entry["method"] != "POST":
            continue
        body = json.loads(entry["body"]) | {"NodeKey": node_key_text}
        if entry["path"] == "/machine/register":
            body["Auth"]["AuthKey"] = auth_key
            status, data = await client.request("POST", "/machine/register", body)
            register = json.loads(data)
            assert status == 200 and register["MachineAuthorized"], register
        elif body.get("Stream"):
            reader = MapReader(client.map_stream(node_key, extra=body))
            readers.append(reader)
            first = await reader.next()
            assert first["Node"]["Key"] == node_key_text and first["SSHPolicy"]["rules"]
        else:
            status, _ = await client.request("POST", "/machine/map", body)
            assert status == 200
    return ClientNode(client, machine_key, node_key, register)


async def test_replayed_ssh_check_holds_then_accepts_after_approval(live: LiveServer) -> None:
    assert live.server.policy is not None
    await live.server.policy.apply(json.dumps(SSH_CHECK_POLICY))
    auth_key = await live.preauth_key()
    readers: list[MapReader] = []
    try:
        await join(live, load("src.jsonl"), auth_key, readers)
        dst_entries = load("dst.jsonl")
        dst = await join(live, dst_entries, auth_key, readers)
        src_id, dst_id = sorted(n.id for n in live.store.nodes.values())
        actions = [e for e in dst_entries if e["method"] == "GET"]
        assert [sorted(e["query"]) for e in actions] == [
            ["local_user"],
            ["auth_id", "local_user"],
            ["local_user"],
        ]
        path = f"/machine/ssh/action/{src_id}/to/{dst_id}"

        def target(entry: dict[str, Any], auth_id: str = "") -> str:
            query = {k: v[0] for k, v in entry["query"].items()} | ({"auth_id": auth_id} if auth_id else {})
            return f"{path}?{urlencode(query)}"

        status, data = await dst.client.request("GET", target(actions[0]))
        hold = json.loads(data)
        assert status == 200 and "holdAndDelegate" in hold and "/auth/hskey-authreq-" in hold["message"]
        auth_id = hold["holdAndDelegate"].split("auth_id=")[1].split("&")[0]

        follow_up = asyncio.ensure_future(dst.client.request("GET", target(actions[1], auth_id)))
        await asyncio.sleep(0.2)
        assert not follow_up.done()
        live.server.ssh_checks.approve(live.server.ssh_checks.pending(auth_id))
        status, data = await asyncio.wait_for(follow_up, 5)
        assert status == 200 and json.loads(data)["accept"] is True

        status, data = await dst.client.request("GET", target(actions[2]))
        assert status == 200 and json.loads(data).get("accept") is True
    finally:
        for reader in readers:
            await reader.close()
