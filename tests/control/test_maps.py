"""Map semantics through our own TS2021 client: the full map, and the deltas peers receive as the tailnet
changes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from pyheadscale import keys
from pyheadscale.tailcfg.frame import decode_frames
from pyheadscale.tailcfg.node import TAGGED_DEVICES_USER_ID
from tests.control.conftest import Harness, MapReader, open_map

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


async def test_full_map_contents(make_harness: Any) -> None:
    harness: Harness = await make_harness(
        dns={"base_domain": "example.ts.net", "nameservers": {"global": ["1.1.1.1"]}}
    )
    a = await harness.node("alpha")
    b = await harness.node("beta", auth_key=await harness.preauth_key("bob"))
    reader = open_map(a, compress=False)
    try:
        full = await reader.next()
    finally:
        await reader.close()
    store = harness.store
    node_a = store.node_by_node_key(a.node_key_text)
    node_b = store.node_by_node_key(b.node_key_text)
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
async def test_join_reaches_every_stream(harness: Harness, compress: bool) -> None:
    a = await harness.node("a")
    b = await harness.node("b")
    ra, rb = open_map(a, compress=compress), open_map(b, compress=compress)
    try:
        await ra.next(), await rb.next()
        c = await harness.node("c")
        c_id = harness.store.node_by_node_key(c.node_key_text).id
        got_a = await ra.wait_for(lambda m: c_id in changed_ids(m), JOIN_DEADLINE)
        got_b = await rb.wait_for(lambda m: c_id in changed_ids(m), JOIN_DEADLINE)
        for got in (got_a, got_b):
            new = next(p for p in got["PeersChanged"] if p["ID"] == c_id)
            assert new["Key"] == c.node_key_text
            assert any(p["ID"] == new["User"] for p in got["UserProfiles"])
    finally:
        await ra.close()
        await rb.close()


async def test_endpoint_change_is_a_patch(harness: Harness) -> None:
    a = await harness.node("a")
    b = await harness.node("b")
    ra, rb = open_map(a), open_map(b, endpoints=["10.0.0.1:41641"])
    try:
        await ra.next(), await rb.next()
        b_id = harness.store.node_by_node_key(b.node_key_text).id
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


async def test_disconnect_sends_offline_patch(harness: Harness) -> None:
    _a, _b, ra, rb, b_id = await harness.streaming_pair()
    try:
        await ra.wait_for(patch_for(b_id, Online=True))
        await rb.close()
        got = await ra.wait_for(patch_for(b_id, Online=False))
        patch = next(p for p in got["PeersChangedPatch"] if p["NodeID"] == b_id)
        assert patch["LastSeen"].endswith("Z")
        assert not harness.store.is_online(b_id)
    finally:
        await ra.close()


async def test_closing_the_connection_takes_node_offline(harness: Harness) -> None:
    _a, b, ra, _rb, b_id = await harness.streaming_pair()
    try:
        await b.client.close()  # the TCP connection goes away without a stream reset
        await ra.wait_for(patch_for(b_id, Online=False))
    finally:
        await ra.close()


async def test_deleted_node_is_removed_from_peers(harness: Harness) -> None:
    a, _b, ra, rb, b_id = await harness.streaming_pair()
    try:
        await harness.store.delete_node(b_id)
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


async def test_keepalive_on_idle_stream(make_harness: Any) -> None:
    harness: Harness = await make_harness(keepalive=0.5)
    a = await harness.node("a")
    reader = open_map(a)
    try:
        await reader.next()
        for _ in range(2):
            assert await reader.wait_for(lambda m: m.get("KeepAlive") is True, 5.0) == {"KeepAlive": True}
    finally:
        await reader.close()


async def test_hostinfo_change_is_a_full_peer_update(harness: Harness) -> None:
    _a, b, ra, rb, b_id = await harness.streaming_pair()
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


async def test_one_shot_map_and_lite_update(harness: Harness) -> None:
    a = await harness.node("a")
    await harness.node("b")
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


async def test_large_map_crosses_flow_control_window(harness: Harness) -> None:
    """A map far larger than HTTP/2's initial 64 KiB window and than one Noise record arrives whole."""
    store = harness.store
    user = store.user_by_name("alice") or await store.create_user("alice")
    key, _ = await store.create_preauth_key(user.id, reusable=True)
    for i in range(250):
        await store.register_with_key(
            key,
            machine_key=keys.machine_public_text(keys.PrivateKey.generate().public()),
            node_key=keys.node_public_text(keys.PrivateKey.generate().public()),
            hostinfo={
                "Hostname": f"bulk-{i}",
                "OS": "linux",
                "Services": [{"Proto": "tcp", "Port": p} for p in range(20)],
            },
            expiry=None,
        )
    a = await harness.node("a")
    reader = open_map(a, compress=False)
    try:
        full = await reader.next()
    finally:
        await reader.close()
    assert len(full["Peers"]) == 250
    assert len(json.dumps(full)) > 200_000


async def test_two_streams_for_one_node(harness: Harness) -> None:
    a = await harness.node("a")
    b = await harness.node("b")
    ra = open_map(a)
    rb1 = open_map(b)
    try:
        await ra.next(), await rb1.next()
        b_id = harness.store.node_by_node_key(b.node_key_text).id
        second = await harness.client(b.machine_key)
        rb2 = MapReader(second.map_stream(b.node_key))
        await rb2.next()
        await rb1.close()
        # one stream is still open: b stays online
        status, _ = await a.client.request(
            "POST", "/machine/map", {"NodeKey": a.node_key_text, "Stream": False, "ReadOnly": True}
        )
        assert status == 200 and harness.store.is_online(b_id)
        await rb2.close()
        await ra.wait_for(patch_for(b_id, Online=False))
    finally:
        await ra.close()


async def test_rename_and_tags_reach_peers_and_self(harness: Harness) -> None:
    _a, _b, ra, rb, b_id = await harness.streaming_pair()
    try:
        await harness.store.rename_node(b_id, "bravo")
        got = await ra.wait_for(
            lambda m: any(
                p["ID"] == b_id and p["Name"].startswith("bravo.") for p in m.get("PeersChanged", [])
            )
        )
        assert got["PeersChanged"]
        mine = await rb.wait_for(lambda m: "Node" in m and m["Node"]["Name"].startswith("bravo."))
        assert mine["Node"]["ID"] == b_id
        await harness.store.set_tags(b_id, ["tag:web"])
        got = await ra.wait_for(
            lambda m: any(p["ID"] == b_id and p["Tags"] == ["tag:web"] for p in m.get("PeersChanged", []))
        )
        peer = next(p for p in got["PeersChanged"] if p["ID"] == b_id)
        assert peer["User"] == TAGGED_DEVICES_USER_ID
        assert any(u["ID"] == TAGGED_DEVICES_USER_ID for u in got["UserProfiles"])
    finally:
        await ra.close()
        await rb.close()


async def test_logout_reaches_own_stream_and_peers(harness: Harness) -> None:
    _a, b, ra, rb, b_id = await harness.streaming_pair()
    try:
        answer = await b.client.register(b.node_key, expiry="2001-01-01T00:00:00Z")
        assert answer["NodeKeyExpired"]
        await ra.wait_for(lambda m: any(p["ID"] == b_id and p["Expired"] for p in m.get("PeersChanged", [])))
        mine = await rb.wait_for(lambda m: "Node" in m)
        assert mine["Node"]["Expired"] is True
    finally:
        await ra.close()
        await rb.close()


async def test_home_derp_by_capability_version(harness: Harness) -> None:
    """Clients before capability 111 read the home DERP from the legacy "127.3.3.40:N" string."""
    hostinfo = {"Hostname": "pytest", "OS": "linux", "NetInfo": {"PreferredDERP": 7}}
    old = await harness.node("old")
    old.client.capver = 100
    new = await harness.node("new")
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


async def test_too_old_capability_version_refused(harness: Harness) -> None:
    node = await harness.node("n")
    status, data = await node.client.request(
        "POST", "/machine/map", {"Version": 50, "NodeKey": node.node_key_text, "Stream": True}
    )
    assert status == 400 and b"too old" in data


async def test_burst_of_changes_loses_nothing(harness: Harness) -> None:
    """Many joins, patches and removals at once: the deltas a stream gets add up to the current tailnet."""
    watcher = await harness.node("watcher")
    reader = open_map(watcher)
    try:
        first = await reader.next()
        view = {p["ID"] for p in first["Peers"]}
        store = harness.store
        user = store.user_by_name("alice")
        key, _ = await store.create_preauth_key(user.id, reusable=True)

        async def join(i: int) -> int:
            node = await store.register_with_key(
                key,
                machine_key=keys.machine_public_text(keys.PrivateKey.generate().public()),
                node_key=keys.node_public_text(keys.PrivateKey.generate().public()),
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
