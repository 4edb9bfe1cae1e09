"""The response types (pyheadscale/tailcfg/): each round-trips through its encoding, and describes the wire.

The round trips build every type by hand, so mypy checks the builders' shapes; the live test checks the other
direction, that every field a running server writes is one the types declare, with the required ones present.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pyheadscale.tailcfg.derp_map import DERPMap, DERPNode, DERPRegion
from pyheadscale.tailcfg.dns import DNSConfig
from pyheadscale.tailcfg.filter import FilterRule
from pyheadscale.tailcfg.frame import decode_frames, encode_frame
from pyheadscale.tailcfg.gotime import go_time
from pyheadscale.tailcfg.map_response import MapResponse
from pyheadscale.tailcfg.node import Node, PeerChange, UserProfile, user_profile
from pyheadscale.tailcfg.register import RegisterResponse, register_response
from pyheadscale.tailcfg.requests import MapRequest, RegisterRequest, parse_request
from pyheadscale.tailcfg.ssh import SSHAction, SSHPolicy, SSHRule
from tests.live_server import LiveServer
from tests.ports import free_port

NODE_KEY = "nodekey:" + "ab" * 32


def _node(node_id: int) -> Node:
    return {
        "ID": node_id,
        "StableID": str(node_id),
        "Name": f"n{node_id}.example.com.",
        "User": 1,
        "Key": NODE_KEY,
        "KeyExpiry": go_time(None),
        "Machine": "mkey:" + "cd" * 32,
        "DiscoKey": "discokey:" + "ef" * 32,
        "Addresses": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"],
        "AllowedIPs": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128", "192.0.2.0/24"],
        "Endpoints": ["192.0.2.1:41641", "[fd7a:115c:a1e0::1]:41641"],
        "HomeDERP": 900,
        "Hostinfo": {"Hostname": "laptop", "OS": "linux"},
        "Created": go_time(datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        "Cap": 130,
        "Tags": ["tag:server"],
        "PrimaryRoutes": ["192.0.2.0/24"],
        "Online": False,
        "MachineAuthorized": True,
        "Expired": False,
        "CapMap": {"https://tailscale.com/cap/ssh": []},
        "DERP": "127.3.3.40:900",
        "LastSeen": go_time(datetime(2024, 1, 2, tzinfo=UTC)),
    }


def _full_map() -> MapResponse:
    derp_node: DERPNode = {"Name": "900a", "RegionID": 900, "HostName": "derp.example.com", "STUNPort": -1}
    region: DERPRegion = {
        "RegionID": 900,
        "RegionCode": "py",
        "RegionName": "pyheadscale",
        "Nodes": [derp_node],
    }
    derp_map: DERPMap = {"Regions": {"900": region}}
    dns: DNSConfig = {
        "Proxied": True,
        "Resolvers": [{"Addr": "192.0.2.53"}],
        "Routes": {"corp.example.com": [{"Addr": "192.0.2.54"}], "internal.": []},
        "Domains": ["example.com"],
        "ExtraRecords": [{"Name": "db.example.com", "Type": "A", "Value": "100.64.0.9"}],
    }
    rule: FilterRule = {
        "SrcIPs": ["100.64.0.0/10"],
        "DstPorts": [{"IP": "*", "Ports": {"First": 22, "Last": 22}}],
        "IPProto": [6],
        "CapGrant": [{"Dsts": ["100.64.0.1/32"], "CapMap": {"tailscale.com/cap/drive": [{"shares": ["*"]}]}}],
    }
    check: SSHRule = {
        "principals": [{"nodeIP": "100.64.0.2"}],
        "sshUsers": {"*": "="},
        "action": {
            "message": "approve at ...",
            "holdAndDelegate": "https://hs.example.com/machine/ssh/action/1",
        },
        "acceptEnv": ["LANG"],
    }
    accept: SSHRule = {
        "principals": [{"any": True}],
        "sshUsers": {"root": "root"},
        "action": {"accept": True, "allowAgentForwarding": True},
    }
    ssh: SSHPolicy = {"rules": [check, accept]}
    return {
        "KeepAlive": False,
        "Node": _node(1),
        "DERPMap": derp_map,
        "Peers": [_node(2), _node(3)],
        "DNSConfig": dns,
        "Domain": "example.com",
        "CollectServices": False,
        "UserProfiles": [user_profile(1, "alice@example.com", "Alice", "https://example.com/a.png")],
        "ControlTime": go_time(datetime(2024, 1, 2, tzinfo=UTC)),
        "Debug": {"DisableLogTail": True},
        "PacketFilters": {"base": [rule]},
        "SSHPolicy": ssh,
        "PingRequest": {"URL": "http://127.0.0.1/machine/ping-response?id=x"},
    }


def _delta() -> MapResponse:
    patch: PeerChange = {
        "NodeID": 2,
        "DERPRegion": 901,
        "Endpoints": ["198.51.100.7:41641"],
        "Online": False,
        "DiscoKey": "discokey:" + "12" * 32,
        "LastSeen": go_time(datetime(2024, 1, 3, tzinfo=UTC)),
    }
    return {
        "PeersChanged": [_node(4)],
        "PeersRemoved": [3],
        "PeersChangedPatch": [patch],
        "UserProfiles": [user_profile(2, "bob", "Bob")],
        "PacketFilters": {"*": None},
        "PacketFilter": [],
    }


def test_map_responses_round_trip() -> None:
    for compress in (True, False):
        messages: list[MapResponse] = [_full_map(), _delta(), {"KeepAlive": True}]
        data = b"".join(encode_frame(m, compress) for m in messages)
        assert decode_frames(data, compress) == messages


def test_register_response_round_trip() -> None:
    """As register.py writes it (the standard library's json, default separators)."""
    responses: list[RegisterResponse] = [
        register_response(error="invalid preauth key"),
        register_response(auth_url="https://hs.example.com/register/abc"),
        register_response(
            user={"ID": 1, "DisplayName": "Alice", "ProfilePicURL": ""},
            login={
                "ID": 1,
                "Provider": "",
                "LoginName": "alice",
                "DisplayName": "Alice",
                "ProfilePicURL": "",
            },
            authorized=True,
        ),
    ]
    for response in responses:
        assert json.loads(json.dumps(response).encode()) == response
    assert list(responses[0]) == ["User", "Login", "NodeKeyExpired", "MachineAuthorized", "AuthURL", "Error"]


def test_requests_round_trip() -> None:
    """A request the models parse, written back out, parses to the same request."""
    expiry = go_time(datetime.now(UTC) + timedelta(days=1))
    register = parse_request(
        RegisterRequest,
        json.dumps(
            {
                "Version": 130,
                "NodeKey": NODE_KEY,
                "Hostinfo": {"Hostname": "laptop"},
                "Auth": {"AuthKey": "k"},
                "Expiry": expiry,
                "Ephemeral": True,
            }
        ).encode(),
    )
    assert parse_request(RegisterRequest, register.model_dump_json().encode()) == register
    assert register.expiry is not None and go_time(register.expiry) == expiry
    map_request = parse_request(
        MapRequest,
        json.dumps(
            {
                "Version": 130,
                "NodeKey": NODE_KEY,
                "DiscoKey": "discokey:" + "11" * 32,
                "Stream": True,
                "Compress": "zstd",
                "Endpoints": ["192.0.2.1:41641"],
                "Hostinfo": {"Hostname": "laptop", "OS": "linux"},
            }
        ).encode(),
    )
    assert parse_request(MapRequest, map_request.model_dump_json().encode()) == map_request


def _check_shape(value: Any, typed: Any, where: str) -> None:
    assert isinstance(value, dict), f"{where} is not an object"
    undeclared = set(value) - typed.__required_keys__ - typed.__optional_keys__
    assert not undeclared, f"{where}: fields {typed.__name__} does not declare: {sorted(undeclared)}"
    missing = typed.__required_keys__ - set(value)
    assert not missing, f"{where}: required fields of {typed.__name__} missing: {sorted(missing)}"


def _check_message(message: dict[str, Any]) -> None:
    _check_shape(message, MapResponse, "MapResponse")
    nodes = [message["Node"]] if "Node" in message else []
    nodes += message.get("Peers", []) + message.get("PeersChanged", [])
    for node in nodes:
        _check_shape(node, Node, "Node")
    for patch in message.get("PeersChangedPatch", []):
        _check_shape(patch, PeerChange, "PeerChange")
    for profile in message.get("UserProfiles", []):
        _check_shape(profile, UserProfile, "UserProfile")
    if "DNSConfig" in message:
        _check_shape(message["DNSConfig"], DNSConfig, "DNSConfig")
    for region in message.get("DERPMap", {}).get("Regions", {}).values():
        _check_shape(region, DERPRegion, "DERPRegion")
        for derp_node in region["Nodes"]:
            _check_shape(derp_node, DERPNode, "DERPNode")
    for rules in message.get("PacketFilters", {}).values():
        for rule in rules or []:
            _check_shape(rule, FilterRule, "FilterRule")
    for ssh_rule in message.get("SSHPolicy", {}).get("rules", []):
        _check_shape(ssh_rule, SSHRule, "SSHRule")
        _check_shape(ssh_rule["action"], SSHAction, "SSHAction")


async def test_what_a_server_writes_is_what_the_types_declare(
    start_live: Callable[..., Awaitable[LiveServer]],
) -> None:
    """A full map, a join (PeersChanged), an endpoint change (PeersChangedPatch), a keep-alive, an SSH check's
    action and the last message to a node that lost access: every field in them is declared, every required
    field present. The embedded relay is on, so the DERP map has a region."""
    relay = {"server": {"enabled": True, "stun_listen_addr": f"127.0.0.1:{free_port()}"}}
    live = await start_live(derp=relay)
    assert live.server.policy is not None
    ssh = [
        {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["root"]},
        {"action": "check", "src": ["alice@"], "dst": ["alice@"], "users": ["admin"]},
    ]
    acls = [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]
    await live.server.policy.apply(json.dumps({"acls": acls, "ssh": ssh}))
    a, b, ra, rb, b_id = await live.streaming_pair()
    a_id = live.record(a).id
    try:
        assert ra.messages[0]["SSHPolicy"]["rules"], "the policy's SSH rules reach the map"
        assert ra.messages[0]["DERPMap"]["Regions"], "the embedded relay's region is in the map"
        status, body = await b.client.request("GET", f"/machine/ssh/action/{a_id}/to/{b_id}?local_user=admin")
        assert status == 200
        _check_shape(json.loads(body), SSHAction, "SSHAction")
        await live.node("c")
        await ra.wait_for(lambda m: bool(m.get("PeersChanged")))
        status, _ = await b.client.request(
            "POST",
            "/machine/map",
            {"Version": 130, "NodeKey": b.node_key_text, "OmitPeers": True, "Endpoints": ["192.0.2.7:41641"]},
        )
        assert status == 200
        await ra.wait_for(lambda m: bool(m.get("PeersChangedPatch")))
        await ra.wait_for(lambda m: m.get("KeepAlive") is True, within=live.keepalive * 3 + 5)
        await live.store.set_expiry(b_id, datetime.now(UTC) - timedelta(minutes=1))
        await rb.ended()
        for message in ra.messages + rb.messages:
            _check_message(message)
        assert rb.messages[-1]["Node"]["Expired"] is True
    finally:
        await asyncio.gather(ra.close(), rb.close())
