"""Issue 8 point 11: Hostinfo is bounded to what real clients send, and a change costs peers bounded bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyheadscale.client.control import ControlClientError
from pyheadscale.tailcfg.hostinfo import (
    DEFAULT_MAX_BYTES,
    bound_hostinfo,
    bound_stored_hostinfo,
    check_hostinfo,
)
from pyheadscale.tailcfg.requests import BadRequest, MapRequest, parse_request
from tests.live_server import LiveServer, StartLive, open_map

FIXTURES = sorted((Path(__file__).resolve().parents[2] / "fixtures" / "tsnet-1.90.9").glob("*.jsonl"))


def recorded_hostinfos() -> list[dict[str, Any]]:
    found = []
    for path in FIXTURES:
        for line in path.read_text().splitlines():
            body = json.loads(json.loads(line)["body"] or "{}")
            if body.get("Hostinfo"):
                found.append(body["Hostinfo"])
    return found


def test_real_clients_hostinfo_is_unchanged() -> None:
    hostinfos = recorded_hostinfos()
    assert len(hostinfos) >= 2
    for hostinfo in hostinfos:
        check_hostinfo(hostinfo)
        assert bound_hostinfo(hostinfo) == hostinfo
        assert len(json.dumps(hostinfo)) < DEFAULT_MAX_BYTES // 4


@pytest.mark.parametrize(
    "hostinfo, where",
    [
        ({"Hostname": "h" * 1_000_000}, "Hostinfo.Hostname is longer than 256"),
        ({"RequestTags": ["tag:a"] * 10_000}, "Hostinfo.RequestTags has more than 256"),
        ({"sshHostKeys": ["k" * 5000]}, "Hostinfo.sshHostKeys has a key longer"),
        ({"NetInfo": {"DERPLatency": {f"{i}-v4": 0.1 for i in range(1000)}}}, "DERPLatency has more than"),
        ({"Services": [{"Proto": "tcp", "Port": 1, "Description": "d" * 300}]}, "Services[].Description"),
        ({"Location": {"City": "c" * 300}}, "Hostinfo.Location.City"),
        ({"RoutableIPs": ["10.0.0.0/8"] * 2000}, "Hostinfo.RoutableIPs has more than 1024"),
        (
            {"RoutableIPs": ["fd7a:115c:a1e0:ab12:4843:cd96:6258:b240/128"] * 1000},
            "limits.hostinfo.max_bytes",
        ),
    ],
)
def test_oversized_hostinfo_refused_naming_the_field(hostinfo: dict[str, Any], where: str) -> None:
    body = json.dumps({"NodeKey": "nodekey:" + "1" * 64, "Hostinfo": hostinfo}).encode()
    with pytest.raises(BadRequest, match="Hostinfo") as info:
        parse_request(MapRequest, body)
    assert where in str(info.value)


def test_services_past_the_bound_are_dropped_not_refused() -> None:
    services = [{"Proto": "tcp", "Port": port, "Description": "daemon"} for port in range(1, 1001)]
    bounded = bound_hostinfo({"Hostname": "busy", "Services": services})
    assert bounded["Services"] == services[:128]


def test_unknown_fields_dropped_at_every_level() -> None:
    hostinfo = {
        "Hostname": "a",
        "Junk": "x" * 100_000,
        "NetInfo": {"PreferredDERP": 1, "Junk": [1] * 1000},
        "Services": [{"Proto": "tcp", "Port": 22, "Junk": "x"}],
        "Location": {"City": "Oslo", "Junk": 1},
        "TPM": {"Vendor": "v", "Junk": 2},
    }
    assert bound_hostinfo(hostinfo) == {
        "Hostname": "a",
        "NetInfo": {"PreferredDERP": 1},
        "Services": [{"Proto": "tcp", "Port": 22}],
        "Location": {"City": "Oslo"},
        "TPM": {"Vendor": "v"},
    }


async def test_big_hostinfo_refused_over_the_wire_and_never_reaches_peers(start_live: StartLive) -> None:
    live: LiveServer = await start_live(limits={"hostinfo": {"max_bytes": 4096}})
    a, b = await live.node("a"), await live.node("b")
    reader = open_map(b)
    await reader.next()
    client = a.client
    with pytest.raises(ControlClientError, match=r"limits\.hostinfo\.max_bytes"):
        stream = client.map_stream(
            a.node_key, extra={"Hostinfo": {"Hostname": "a", "RoutableIPs": ["10.0.0.0/8"] * 400}}
        )
        await stream.__anext__()
    # A Hostinfo with an unknown 100 KB field is accepted without it; b's delta stays small.
    node_id = live.record(a).id
    update = {"Hostinfo": {"Hostname": "a", "OS": "linux", "Junk": "x" * 100_000}, "OmitPeers": True}
    status, _ = await client.request(
        "POST",
        "/machine/map",
        {"Version": client.capver, "NodeKey": a.node_key_text, "Stream": False, **update},
    )
    assert status == 200
    assert "Junk" not in live.store.nodes[node_id].hostinfo
    delta = await reader.wait_for(
        lambda m: (
            any(p.get("ID") == node_id for p in (m.get("PeersChanged") or []))
            or any(p.get("NodeID") == node_id for p in (m.get("PeersChangedPatch") or []))
        ),
        within=10,
    )
    assert len(json.dumps(delta)) < 4096 + 2048
    await reader.close()


def test_endpoints_are_bounded() -> None:
    endpoints = [f"192.0.2.1:{port}" for port in range(1, 1001)]
    body = json.dumps({"NodeKey": "nodekey:" + "1" * 64, "Endpoints": endpoints}).encode()
    with pytest.raises(BadRequest, match="Endpoints: more than 256 endpoints"):
        parse_request(MapRequest, body)
    body = json.dumps({"NodeKey": "nodekey:" + "1" * 64, "Endpoints": endpoints[:40]}).encode()
    assert parse_request(MapRequest, body).Endpoints == endpoints[:40]


async def test_oversized_hostinfo_in_the_database_is_bounded_on_load(start_live: StartLive) -> None:
    """Rows written before these bounds (or by Headscale) are held to them when read back."""
    live: LiveServer = await start_live()
    node = await live.node("old")
    record = live.record(node)
    node_id = record.id
    stored = {"Hostname": "old", "OS": "linux", "OSVersion": "v" * 1_000_000, "Junk": "x" * 1000}
    # The store writes what it is given; only the wire parser bounds a client's Hostinfo.
    await live.store.update_from_map_request(record, disco_key=None, endpoints=None, hostinfo=stored)
    await node.client.close()
    await live.restart()
    loaded = live.store.nodes[node_id].hostinfo
    assert loaded == {"Hostname": "old", "OS": "linux"}
    assert bound_stored_hostinfo({"Hostname": "ok", "Junk": 1}) == {"Hostname": "ok"}
