"""Map semantics through our own TS2021 client: the full map, and the deltas peers receive as the tailnet
changes."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from pyheadscale.tailcfg.frame import decode_frames
from pyheadscale.tailcfg.node import TAGGED_DEVICES_USER_ID
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.live_server import LiveServer, MapReader, StartLive, open_map

JOIN_DEADLINE = 1.0


def changed_ids(message: dict[str, Any]) -> set[int]:
    return {p["ID"] for p in message.get("PeersChanged", [])}


def patch_for(node_id: int, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    def match(message: dict[str, Any]) -> bool:
        return any(
            p["NodeID"] == node_id and all(p.get(k) == v for k, v in fields.items())
            for p in message.get("PeersChangedPatch", [])
        )

    return match


async def test_full_map_contents(start_live: StartLive) -> None:
    live: LiveServer = await start_live(
        dns={"base_domain": "example.ts.net", "nameservers": {"global": ["1.1.1.1"]}}
    )
    a = await live.node("alpha")
    b = await live.node("beta", auth_key=await live.preauth_key("bob"))
    reader = open_map(a, compress=False)
    try:
        full = await reader.next()
    finally:
        await reader.close()
    node_a = live.record(a)
    node_b = live.record(b)
    me = full["Node"]
    assert me["ID"] == node_a.id and me["Key"] == a.node_key_text and me["Machine"] == a.machine_key_text
    assert me["Addresses"] == [f"{node_a.ipv4}/32", f"{node_a.ipv6}/128"]
    assert me["Name"] == "alpha.example.ts.net."
    assert me["Online"] is True and me["MachineAuthorized"] is True and me["Expired"] is False
    assert [p["ID"] for p in full["Peers"]] == [node_b.id]
    peer = full["Peers"][0]
    assert peer["Key"] == b.node_key_text and peer["Addresses"] == [f"{node_b.ipv4}/32", f"{node_b.ipv6}/128"]
    assert set(peer["Addresses"]) <= set(peer["AllowedIPs"])
    profiles = {p["ID"]: p for p in full["UserProfiles"]}
    assert {profiles[me["User"]]["LoginName"], profiles[peer["User"]]["LoginName"]} == {"alice", "bob"}
    assert full["DNSConfig"]["Resolvers"] == [{"Addr": "1.1.1.1"}]
    assert "example.ts.net" in full["DNSConfig"]["Domains"]
    assert full["Domain"] == "127.0.0.1"
    assert full["CollectServices"] is False
    assert full["Debug"] == {"DisableLogTail": True}
    assert full["PacketFilters"]["base"]
    assert isinstance(full["DERPMap"], dict)


@pytest.mark.parametrize("compress", [True, False], ids=["zstd", "plain"])
async def test_join_reaches_every_stream(live: LiveServer, compress: bool) -> None:
    a = await live.node("a")
    b = await live.node("b")
    ra, rb = open_map(a, compress=compress), open_map(b, compress=compress)
    try:
        await ra.next(), await rb.next()
        c = await live.node("c")
        c_id = live.record(c).id
        got_a = await ra.wait_for(lambda m: c_id in changed_ids(m), JOIN_DEADLINE)
        got_b = await rb.wait_for(lambda m: c_id in changed_ids(m), JOIN_DEADLINE)
        for got in (got_a, got_b):
            new = next(p for p in got["PeersChanged"] if p["ID"] == c_id)
            assert new["Key"] == c.node_key_text
            assert any(p["ID"] == new["User"] for p in got["UserProfiles"])
    finally:
        await ra.close()
        await rb.close()


async def test_endpoint_change_is_a_patch(live: LiveServer) -> None:
    a = await live.node("a")
    b = await live.node("b")
    ra, rb = open_map(a), open_map(b, endpoints=["10.0.0.1:41641"])
    try:
        await ra.next(), await rb.next()
        b_id = live.record(b).id
        status, _ = await b.client.request(
            "POST",
            "/machine/map",
            {
                "Version": 130,
                "NodeKey": b.node_key_text,
                "Endpoints": ["192.0.2.7:41641"],
                "OmitPeers": True,
                "Stream": False,
                "Hostinfo": {"Hostname": "pytest", "OS": "linux"},
            },
        )
        assert status == 200
        got = await ra.wait_for(patch_for(b_id, Endpoints=["192.0.2.7:41641"]))
        assert "PeersChanged" not in got or b_id not in changed_ids(got)
    finally:
        await ra.close()
        await rb.close()


async def test_disconnect_sends_offline_patch(live: LiveServer) -> None:
    _a, _b, ra, rb, b_id = await live.streaming_pair()
    try:
        await ra.wait_for(patch_for(b_id, Online=True))
        await rb.close()
        got = await ra.wait_for(patch_for(b_id, Online=False))
        patch = next(p for p in got["PeersChangedPatch"] if p["NodeID"] == b_id)
        assert patch["LastSeen"].endswith("Z")
        assert not live.store.is_online(b_id)
    finally:
        await ra.close()


def parse_time(text: str) -> datetime:
    """An RFC 3339 time as Go and protobuf JSON write it."""
    return datetime.fromisoformat(text)


async def test_last_seen_is_stored_when_the_last_stream_closes(live: LiveServer) -> None:
    """Going offline stamps last_seen in the database, not only in memory: peers, the API and a restarted
    server all report the moment the stream closed."""
    _a, _b, ra, rb, b_id = await live.streaming_pair()
    try:
        await ra.wait_for(patch_for(b_id, Online=True))
        connected = datetime.now(UTC)
        await rb.close()
        got = await ra.wait_for(patch_for(b_id, Online=False))
    finally:
        await ra.close()
    patch = next(p for p in got["PeersChangedPatch"] if p["NodeID"] == b_id)
    went_offline = parse_time(patch["LastSeen"])
    assert went_offline >= connected

    async def reported() -> tuple[bool, datetime]:
        status, body = await live.local_api("GET", f"/node/{b_id}")
        assert status == 200, body
        return body["node"]["online"], parse_time(body["node"]["lastSeen"])

    assert await reported() == (False, went_offline)
    await live.restart()
    assert await reported() == (False, went_offline), "last_seen was not stored"


async def test_closing_the_connection_takes_node_offline(live: LiveServer) -> None:
    _a, b, ra, _rb, b_id = await live.streaming_pair()
    try:
        await b.client.close()  # the TCP connection goes away without a stream reset
        await ra.wait_for(patch_for(b_id, Online=False))
    finally:
        await ra.close()


async def test_deleted_node_is_removed_from_peers(live: LiveServer) -> None:
    a, _b, ra, rb, b_id = await live.streaming_pair()
    try:
        await live.store.delete_node(b_id)
        got = await ra.wait_for(lambda m: b_id in m.get("PeersRemoved", []))
        assert b_id not in changed_ids(got)
        assert await rb.ended()  # the deleted node's own stream ends
        # a fresh map for a agrees
        status, data = await a.client.request(
            "POST",
            "/machine/map",
            {"Version": 130, "NodeKey": a.node_key_text, "Stream": False, "ReadOnly": True},
        )
        assert status == 200
        (full,) = decode_frames(data, compressed=False)
        assert [p["ID"] for p in full["Peers"]] == []
    finally:
        await ra.close()
        await rb.close()


async def test_keepalive_on_idle_stream(start_live: StartLive) -> None:
    live: LiveServer = await start_live(keepalive=0.5)
    a = await live.node("a")
    reader = open_map(a)
    try:
        await reader.next()
        for _ in range(2):
            assert await reader.wait_for(lambda m: m.get("KeepAlive") is True, 5.0) == {"KeepAlive": True}
    finally:
        await reader.close()


async def test_hostinfo_change_is_a_full_peer_update(live: LiveServer) -> None:
    _a, b, ra, rb, b_id = await live.streaming_pair()
    try:
        status, _ = await b.client.request(
            "POST",
            "/machine/map",
            {
                "Version": 130,
                "NodeKey": b.node_key_text,
                "OmitPeers": True,
                "Hostinfo": {"Hostname": "pytest", "OS": "linux", "OSVersion": "6.1"},
            },
        )
        assert status == 200
        got = await ra.wait_for(
            lambda m: any(
                p["ID"] == b_id and p["Hostinfo"].get("OSVersion") == "6.1" for p in m.get("PeersChanged", [])
            )
        )
        assert got["PeersChanged"]
    finally:
        await ra.close()
        await rb.close()


async def test_one_shot_map_and_lite_update(live: LiveServer) -> None:
    a = await live.node("a")
    await live.node("b")
    status, data = await a.client.request(
        "POST", "/machine/map", {"Version": 130, "NodeKey": a.node_key_text, "Stream": False, "Compress": ""}
    )
    assert status == 200
    (full,) = decode_frames(data, compressed=False)
    assert len(full["Peers"]) == 1 and full["Node"]["Key"] == a.node_key_text
    status, data = await a.client.request(
        "POST",
        "/machine/map",
        {"Version": 130, "NodeKey": a.node_key_text, "Stream": False, "OmitPeers": True},
    )
    assert status == 200


async def test_large_map_crosses_flow_control_window(live: LiveServer) -> None:
    """A map far larger than HTTP/2's initial 64 KiB window and than one Noise record arrives whole."""
    store = live.store
    user = store.user_by_name("alice") or await store.create_user("alice")
    key, _ = await store.create_preauth_key(user.id, reusable=True)
    for i in range(250):
        await store.register_with_key(
            key,
            machine_key=MachinePrivate.generate().public().text,
            node_key=NodePrivate.generate().public().text,
            hostinfo={
                "Hostname": f"bulk-{i}",
                "OS": "linux",
                "Services": [{"Proto": "tcp", "Port": p} for p in range(20)],
            },
            expiry=None,
        )
    a = await live.node("a")
    reader = open_map(a, compress=False)
    try:
        full = await reader.next()
    finally:
        await reader.close()
    assert len(full["Peers"]) == 250
    assert len(json.dumps(full)) > 200_000


async def test_two_streams_for_one_node(live: LiveServer) -> None:
    a = await live.node("a")
    b = await live.node("b")
    ra = open_map(a)
    rb1 = open_map(b)
    try:
        await ra.next(), await rb1.next()
        b_id = live.record(b).id
        second = await live.client(b.machine_key)
        rb2 = MapReader(second.map_stream(b.node_key))
        await rb2.next()
        await rb1.close()
        # one stream is still open: b stays online
        status, _ = await a.client.request(
            "POST", "/machine/map", {"NodeKey": a.node_key_text, "Stream": False, "ReadOnly": True}
        )
        assert status == 200 and live.store.is_online(b_id)
        await rb2.close()
        await ra.wait_for(patch_for(b_id, Online=False))
    finally:
        await ra.close()


async def test_rename_and_tags_reach_peers_and_self(live: LiveServer) -> None:
    _a, _b, ra, rb, b_id = await live.streaming_pair()
    try:
        await live.store.rename_node(b_id, "bravo")
        got = await ra.wait_for(
            lambda m: any(
                p["ID"] == b_id and p["Name"].startswith("bravo.") for p in m.get("PeersChanged", [])
            )
        )
        assert got["PeersChanged"]
        mine = await rb.wait_for(lambda m: "Node" in m and m["Node"]["Name"].startswith("bravo."))
        assert mine["Node"]["ID"] == b_id
        await live.store.set_tags(b_id, ["tag:web"])
        got = await ra.wait_for(
            lambda m: any(p["ID"] == b_id and p["Tags"] == ["tag:web"] for p in m.get("PeersChanged", []))
        )
        peer = next(p for p in got["PeersChanged"] if p["ID"] == b_id)
        assert peer["User"] == TAGGED_DEVICES_USER_ID
        assert any(u["ID"] == TAGGED_DEVICES_USER_ID for u in got["UserProfiles"])
    finally:
        await ra.close()
        await rb.close()


async def test_logout_reaches_own_stream_and_peers(live: LiveServer) -> None:
    _a, b, ra, rb, b_id = await live.streaming_pair()
    try:
        answer = await b.client.register(b.node_key, expiry="2001-01-01T00:00:00Z")
        assert answer["NodeKeyExpired"]
        await ra.wait_for(lambda m: any(p["ID"] == b_id and p["Expired"] for p in m.get("PeersChanged", [])))
        mine = await rb.wait_for(lambda m: "Node" in m)
        assert mine["Node"]["Expired"] is True
    finally:
        await ra.close()
        await rb.close()


async def test_home_derp_by_capability_version(live: LiveServer) -> None:
    """Clients before capability 111 read the home DERP from the legacy "127.3.3.40:N" string."""
    hostinfo = {"Hostname": "pytest", "OS": "linux", "NetInfo": {"PreferredDERP": 7}}
    old = await live.node("old")
    old.client.capver = 100
    new = await live.node("new")
    ro = open_map(old, extra={"Version": 100, "Hostinfo": hostinfo})
    rn = open_map(new, extra={"Hostinfo": hostinfo})
    try:
        old_full, new_full = await ro.next(), await rn.next()
    finally:
        await ro.close()
        await rn.close()
    assert old_full["Node"]["DERP"] == "127.3.3.40:7" and old_full["Node"]["HomeDERP"] == 7
    assert new_full["Node"]["HomeDERP"] == 7 and "DERP" not in new_full["Node"]
    assert old_full["Node"]["Cap"] == 100


async def test_too_old_capability_version_refused(live: LiveServer) -> None:
    node = await live.node("n")
    status, data = await node.client.request(
        "POST", "/machine/map", {"Version": 50, "NodeKey": node.node_key_text, "Stream": True}
    )
    assert status == 400 and b"too old" in data


async def test_burst_of_changes_loses_nothing(live: LiveServer) -> None:
    """Many joins, patches and removals at once: the deltas a stream gets add up to the current tailnet."""
    watcher = await live.node("watcher")
    reader = open_map(watcher)
    try:
        first = await reader.next()
        view = {p["ID"] for p in first["Peers"]}
        store = live.store
        user = store.user_by_name("alice")
        assert user is not None
        key, _ = await store.create_preauth_key(user.id, reusable=True)

        async def join(i: int) -> int:
            node = await store.register_with_key(
                key,
                machine_key=MachinePrivate.generate().public().text,
                node_key=NodePrivate.generate().public().text,
                hostinfo={"Hostname": f"burst-{i}"},
                expiry=None,
            )
            return int(node.id)

        ids = await asyncio.gather(*(join(i) for i in range(20)))
        for node_id in ids[:5]:
            await store.delete_node(node_id)
        for node_id in ids[5:10]:
            await store.update_from_map_request(
                store.nodes[node_id], disco_key=None, endpoints=[f"192.0.2.{node_id % 250}:1"], hostinfo=None
            )
        expected = set(ids[5:])
        endpoints: dict[int, list[str]] = {}

        def caught_up(message: dict[str, Any]) -> bool:
            for peer in message.get("PeersChanged", []):
                view.add(peer["ID"])
                endpoints[peer["ID"]] = peer["Endpoints"]
            for patch in message.get("PeersChangedPatch", []):
                endpoints[patch["NodeID"]] = patch["Endpoints"]
            view.difference_update(message.get("PeersRemoved", []))
            return view == expected and all(endpoints.get(i) for i in ids[5:10])

        await reader.wait_for(caught_up, 10)
        for node_id in ids[5:10]:
            assert endpoints[node_id] == [f"192.0.2.{node_id % 250}:1"]
    finally:
        await reader.close()


POLICY_FIELDS = ("PacketFilter", "PacketFilters", "SSHPolicy")


def covers(source: str, address: str) -> bool:
    """Whether a FilterRule source (`*`, a CIDR, an `a-b` range or one IP) includes `address`."""
    ip = ipaddress.ip_address(address)
    if source == "*":
        return True
    if "-" in source:
        first, last = (ipaddress.ip_address(part) for part in source.split("-"))
        return first.version == ip.version and int(first) <= int(ip) <= int(last)
    return ip in ipaddress.ip_network(source, strict=False)


async def test_a_delta_carries_the_policy_fields_only_when_they_changed(start_live: StartLive) -> None:
    """A join can change some nodes' packet filters and not others': the nodes whose rules name the newcomer
    get their new filter in a delta; the others get the newcomer as a peer and no filter or SSH policy."""
    live = await start_live(policy={"mode": "database"})
    policy = {
        "acls": [
            {"action": "accept", "src": ["alice@"], "dst": ["bob@:22"]},  # bob's filter lists alice's nodes
            {"action": "accept", "src": ["*"], "dst": ["alice@:80"]},  # alice's does not depend on who joins
        ]
    }
    status, body = await live.local_api("PUT", "/policy", {"policy": json.dumps(policy)})
    assert status == 200, body
    alice1 = await live.node("alice1")
    bob = await live.node("bob", auth_key=await live.preauth_key("bob"))
    ra, rb = open_map(alice1), open_map(bob)
    try:
        for full in (await ra.next(), await rb.next()):
            assert "PacketFilters" in full and "SSHPolicy" in full
        alice2 = await live.node("alice2")
        newcomer = live.record(alice2)
        assert newcomer.ipv4 is not None

        def bob_filter_admits_newcomer(message: dict[str, Any]) -> bool:
            rules = message.get("PacketFilters", {}).get("base") or []
            return any(covers(src, str(newcomer.ipv4)) for rule in rules for src in rule["SrcIPs"])

        await rb.wait_for(bob_filter_admits_newcomer)
        await ra.wait_for(lambda m: newcomer.id in changed_ids(m))
        # Everything the join caused reaches alice1 before the newcomer's coming online does.
        rc = open_map(alice2)
        try:
            await ra.wait_for(patch_for(newcomer.id, Online=True))
        finally:
            await rc.close()
        deltas = ra.messages[1:]
        sent = [field for message in deltas for field in POLICY_FIELDS if field in message]
        assert sent == [], f"alice1's filter and SSH policy did not change, yet a delta carried {sent}"
    finally:
        await ra.close()
        await rb.close()
