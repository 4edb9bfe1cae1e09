"""Tailscale SSH `check`: the SSH action endpoint, the approval page, `auth approve|reject`, checkPeriod."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from pyheadscale.control.ssh_action import MAX_PENDING_PER_NODE
from tests.live_server import ClientNode, LiveServer


def check_policy(period: str | None) -> str:
    rule: dict[str, Any] = {"action": "check", "src": ["alice@"], "dst": ["alice@"], "users": ["root"]}
    if period is not None:
        rule["checkPeriod"] = period
    return json.dumps({"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}], "ssh": [rule]})


async def setup(live: LiveServer, period: str | None = "1h") -> tuple[ClientNode, ClientNode, int, int]:
    a, b = await live.node("a"), await live.node("b")
    assert live.server.policy is not None
    await live.server.policy.apply(check_policy(period))
    ids = [live.record(n).id for n in (a, b)]
    return a, b, ids[0], ids[1]


async def ask(node: ClientNode, path: str) -> tuple[int, dict[str, Any] | str]:
    status, body = await node.client.request("GET", path)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def follow(hold_and_delegate: str, src: int, dst: int) -> str:
    """What tailscaled does with a HoldAndDelegate URL: fill in the placeholders, keep path and query."""
    url = hold_and_delegate.replace("$SRC_NODE_ID", str(src)).replace("$DST_NODE_ID", str(dst))
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def api(live: LiveServer, verb: str, auth_id: str) -> tuple[int, dict[str, Any]]:
    _, secret = await live.store.create_api_key(None)
    headers = {"Authorization": f"Bearer {secret}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{live.url}/api/v1/auth/{verb}", json={"auth_id": auth_id}, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def test_the_policy_names_the_action_url_with_placeholders(live: LiveServer) -> None:
    _, b, _, _ = await setup(live)
    assert live.server.policy is not None
    ssh_policy = live.server.policy.ssh_policy(live.record(b).id)
    assert ssh_policy is not None
    hold = ssh_policy["rules"][0]["action"]["holdAndDelegate"]
    assert hold == f"{live.url}/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER"


async def test_check_held_until_approved_then_accepted_within_check_period(live: LiveServer) -> None:
    _, b, src, dst = await setup(live, "1h")
    status, action = await ask(b, f"/machine/ssh/action/{src}/to/{dst}?local_user=root")
    assert status == 200 and isinstance(action, dict)
    assert "accept" not in action and "reject" not in action
    hold = action["holdAndDelegate"]
    auth_id = hold.split("auth_id=")[1].split("&")[0]
    assert auth_id.startswith("hskey-authreq-") and len(auth_id) == 38
    assert f"{live.url}/auth/{auth_id}" in action["message"]

    follow_up = asyncio.create_task(ask(b, follow(hold, src, dst)))
    await asyncio.sleep(0.3)
    assert not follow_up.done(), "the follow-up must wait for the operator"

    async with aiohttp.ClientSession() as session, session.get(f"{live.url}/auth/{auth_id}") as page:
        text = await page.text()
    assert page.status == 200 and f"pyheadscale auth approve --auth-id {auth_id}" in text

    status, body = await api(live, "approve", auth_id)
    assert status == 200 and body == {}  # Headscale's AuthApproveResponse is empty
    status, verdict = await asyncio.wait_for(follow_up, 5)
    assert status == 200 and isinstance(verdict, dict) and verdict["accept"] is True

    # Within checkPeriod the next connection is accepted at once.
    status, again = await ask(b, f"/machine/ssh/action/{src}/to/{dst}?local_user=root")
    assert status == 200 and isinstance(again, dict) and again.get("accept") is True
    assert "holdAndDelegate" not in again


async def test_always_checks_every_connection(live: LiveServer) -> None:
    _, b, src, dst = await setup(live, "always")
    _, action = await ask(b, f"/machine/ssh/action/{src}/to/{dst}")
    assert isinstance(action, dict)
    auth_id = action["holdAndDelegate"].split("auth_id=")[1].split("&")[0]
    follow_up = asyncio.create_task(ask(b, follow(action["holdAndDelegate"], src, dst)))
    await asyncio.sleep(0.1)
    assert (await api(live, "approve", auth_id))[0] == 200
    assert (await asyncio.wait_for(follow_up, 5))[1]["accept"] is True  # type: ignore[index]
    _, again = await ask(b, f"/machine/ssh/action/{src}/to/{dst}")
    assert isinstance(again, dict) and "holdAndDelegate" in again and "accept" not in again


async def test_rejected_check_is_a_reject(live: LiveServer) -> None:
    _, b, src, dst = await setup(live)
    _, action = await ask(b, f"/machine/ssh/action/{src}/to/{dst}")
    assert isinstance(action, dict)
    auth_id = action["holdAndDelegate"].split("auth_id=")[1].split("&")[0]
    follow_up = asyncio.create_task(ask(b, follow(action["holdAndDelegate"], src, dst)))
    await asyncio.sleep(0.1)
    assert (await api(live, "reject", auth_id))[0] == 200
    status, verdict = await asyncio.wait_for(follow_up, 5)
    assert status == 200 and isinstance(verdict, dict) and verdict.get("reject") is True
    assert "accept" not in verdict
    # The check is gone: approving it now is a clear 404.
    status, body = await api(live, "approve", auth_id)
    assert status == 404 and auth_id in json.dumps(body)


async def test_only_the_destination_machine_may_ask(live: LiveServer) -> None:
    a, _, src, dst = await setup(live)
    status, body = await ask(a, f"/machine/ssh/action/{src}/to/{dst}")
    assert status == 401 and "machine key does not match dst node" in str(body)
    status, body = await ask(a, f"/machine/ssh/action/{src}/to/999999")
    assert status == 404 and "dst node 999999 not found" in str(body)


async def test_follow_up_for_another_pair_or_a_bad_id_is_refused(live: LiveServer) -> None:
    _, b, src, dst = await setup(live)
    _, action = await ask(b, f"/machine/ssh/action/{src}/to/{dst}")
    assert isinstance(action, dict)
    auth_id = action["holdAndDelegate"].split("auth_id=")[1].split("&")[0]
    status, body = await ask(b, f"/machine/ssh/action/{dst}/to/{dst}?auth_id={auth_id}")
    assert status == 401 and "does not match" in str(body)
    status, body = await ask(b, f"/machine/ssh/action/{src}/to/{dst}?auth_id=hskey-authreq-short")
    assert status == 400 and "invalid auth_id" in str(body)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/machine/ssh/action/1/to/x", 404),
        ("/machine/ssh/action/1", 404),
        ("/machine/ssh/action/" + "9" * 30 + "/to/1", 404),
    ],
)
async def test_malformed_action_paths_are_clear_404s(live: LiveServer, path: str, status: int) -> None:
    _, b, _, _ = await setup(live)
    got, body = await ask(b, path)
    assert got == status and "expected /machine/ssh/action/" in str(body)


async def test_unknown_auth_id_without_a_check_rule_is_refused(live: LiveServer) -> None:
    a, b = await live.node("a"), await live.node("b")
    src = live.record(a).id
    dst = live.record(b).id
    status, body = await ask(b, f"/machine/ssh/action/{src}/to/{dst}?auth_id=hskey-authreq-" + "A" * 24)
    assert status == 400 and "no SSH check is waiting" in str(body)


async def test_unknown_auth_id_under_a_check_rule_starts_a_new_check(live: LiveServer) -> None:
    _, b, src, dst = await setup(live)
    stale = "hskey-authreq-" + "A" * 24
    status, action = await ask(b, f"/machine/ssh/action/{src}/to/{dst}?auth_id={stale}")
    assert status == 200 and isinstance(action, dict) and "holdAndDelegate" in action
    assert stale not in action["holdAndDelegate"]


async def test_neighbouring_source_addresses_are_separate_principals(live: LiveServer) -> None:
    """tailscaled matches a principal's nodeIP as one address: a merged range would let nobody in."""
    _, b, _, _ = await setup(live)
    assert live.server.policy is not None
    ssh_policy = live.server.policy.ssh_policy(live.record(b).id)
    assert ssh_policy is not None
    principals = [p["nodeIP"] for p in ssh_policy["rules"][0]["principals"]]
    nodes = sorted(live.store.nodes.values(), key=lambda n: n.id)
    assert principals == [str(n.ipv4) for n in nodes] + [str(n.ipv6) for n in nodes]


async def test_one_destination_cannot_crowd_out_the_others(live: LiveServer) -> None:
    a, b, src, dst = await setup(live)
    for _ in range(MAX_PENDING_PER_NODE):
        status, _ = await ask(b, f"/machine/ssh/action/{src}/to/{dst}")
        assert status == 200
    status, body = await ask(b, f"/machine/ssh/action/{src}/to/{dst}")
    assert status == 429 and f"too many SSH checks to node {dst}" in str(body)
    # Another destination still gets its check.
    status, action = await ask(a, f"/machine/ssh/action/{dst}/to/{src}")
    assert status == 200 and isinstance(action, dict) and "holdAndDelegate" in action
