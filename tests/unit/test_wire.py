"""Wire encodings: Go times, request parsing errors, Hostinfo checks and the TS2021 early payload.

Map frames and the response types have their round trips in tests/tailcfg/."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from pyheadscale.control.ts2021 import EARLY_PAYLOAD_MAGIC, early_payload
from pyheadscale.tailcfg.gotime import go_time, parse_go_time
from pyheadscale.tailcfg.hostinfo import check_hostinfo
from pyheadscale.tailcfg.register import register_response
from pyheadscale.tailcfg.requests import (
    BadRequest,
    MapRequest,
    RegisterRequest,
    Request,
    check_endpoint,
    parse_request,
)
from pyheadscale.tailkey import ChallengePublic

NODE_KEY = "nodekey:" + "ab" * 32
SECRET_HEX = "9f3c6a1be2d04d55b7a8e61c0f2394de5ab1c7e8f90d2a3b4c5d6e7f8091a2b3"


@pytest.mark.parametrize(
    "value, text",
    [
        (None, "0001-01-01T00:00:00Z"),
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05Z"),
        (datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC), "2024-01-02T03:04:05.12Z"),
        (datetime(2024, 1, 2, 3, 4, 5, 1, tzinfo=UTC), "2024-01-02T03:04:05.000001Z"),
        (datetime(2024, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))), "2024-01-02T03:04:05Z"),
    ],
)
def test_go_time(value: datetime | None, text: str) -> None:
    assert go_time(value) == text
    assert parse_go_time(text) == (value.astimezone(UTC) if value else None)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-01-02T03:04:05.123456789Z", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2024-01-02T03:04:05.1Z", datetime(2024, 1, 2, 3, 4, 5, 100000, tzinfo=UTC)),
        ("2024-01-02T03:04:05.000000001Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T05:04:05.5+02:00", datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
        ("2024-01-02T03:04:05-07:30", datetime(2024, 1, 2, 10, 34, 5, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_go_time(text: str | None, expected: datetime | None) -> None:
    assert parse_go_time(text) == expected


@pytest.mark.parametrize(
    "text", ["yesterday", "2024-13-01T00:00:00Z", "2024-01-01", "2024-01-01T00:00:00", "2024-01-01T25:00:00Z"]
)
def test_parse_go_time_refuses_what_go_would(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_go_time(text)


def test_register_expiry_must_be_a_time() -> None:
    body = json.dumps({"NodeKey": NODE_KEY, "Expiry": "yesterday"}).encode()
    with pytest.raises(BadRequest, match=r"invalid RegisterRequest: Expiry: .*RFC 3339"):
        parse_request(RegisterRequest, body)


def test_go_time_round_trip_many() -> None:
    base = datetime(2030, 6, 30, 23, 59, 59, tzinfo=UTC)
    for micro in (0, 1, 10, 999999, 500000, 123456):
        value = base.replace(microsecond=micro)
        assert parse_go_time(go_time(value)) == value


@pytest.mark.parametrize(
    "model, body, field",
    [
        (RegisterRequest, b"{}", "NodeKey"),
        (RegisterRequest, b'{"NodeKey": "mkey:' + b"ab" * 32 + b'"}', "NodeKey"),
        (
            RegisterRequest,
            b'{"NodeKey": "' + NODE_KEY.encode() + b'", "OldNodeKey": "x"}',
            "OldNodeKey",
        ),
        (RegisterRequest, b'{"NodeKey": "' + NODE_KEY.encode() + b'", "Version": "new"}', "Version"),
        (
            RegisterRequest,
            b'{"NodeKey": "' + NODE_KEY.encode() + b'", "Auth": {"AuthKey": 5}}',
            "Auth.AuthKey",
        ),
        (RegisterRequest, b'{"NodeKey": "' + NODE_KEY.encode() + b'", "Hostinfo": []}', "Hostinfo"),
        (MapRequest, b'{"NodeKey": 7}', "NodeKey"),
        (
            MapRequest,
            b'{"NodeKey": "' + NODE_KEY.encode() + b'", "DiscoKey": "nodekey:00"}',
            "DiscoKey",
        ),
        (
            MapRequest,
            b'{"NodeKey": "' + NODE_KEY.encode() + b'", "Endpoints": "1.2.3.4:5"}',
            "Endpoints",
        ),
        (MapRequest, b'{"NodeKey": "' + NODE_KEY.encode() + b'", "Stream": "maybe"}', "Stream"),
    ],
)
def test_request_errors_name_the_field(model: type[Request], body: bytes, field: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request(model, body)
    message = str(info.value)
    assert message.startswith(f"invalid {model.__name__}: {field}:"), message


@pytest.mark.parametrize("model", [RegisterRequest, MapRequest])
@pytest.mark.parametrize(
    "node_key, message",
    [
        ("", "required"),
        (None, "required"),
        ("nodekey:" + "0" * 64, "zero"),
    ],
)
def test_node_key_required_and_nonzero(model: type[Request], node_key: str | None, message: str) -> None:
    with pytest.raises(BadRequest, match=f"invalid {model.__name__}: NodeKey: .*{message}"):
        parse_request(model, json.dumps({"NodeKey": node_key}).encode())


def test_old_node_key_may_be_zero() -> None:
    req = parse_request(
        RegisterRequest,
        json.dumps({"NodeKey": NODE_KEY, "OldNodeKey": "nodekey:" + "0" * 64}).encode(),
    )
    assert req.OldNodeKey.endswith("0" * 64)


@pytest.mark.parametrize(
    "field, value, problem",
    [
        ("NodeKey", "mkey:" + SECRET_HEX, "NodeKey: a node key must begin with 'nodekey:'"),
        (
            "NodeKey",
            "nodekey:" + SECRET_HEX[:-1],
            "NodeKey: a node key must have 64 hex digits after 'nodekey:', got 63",
        ),
        (
            "NodeKey",
            "nodekey:" + SECRET_HEX[:-1] + "x",
            "NodeKey: a node key has a character that is not a hex",
        ),
        ("OldNodeKey", "discokey:" + SECRET_HEX, "OldNodeKey: a node key must begin with 'nodekey:'"),
        ("DiscoKey", "nodekey:" + SECRET_HEX, "DiscoKey: a disco key must begin with 'discokey:'"),
        ("DiscoKey", "discokey:" + "0" * 63 + "x", "DiscoKey: a disco key has a character that is not a hex"),
    ],
)
def test_malformed_keys_are_refused_without_echoing_them(field: str, value: str, problem: str) -> None:
    body = {"NodeKey": NODE_KEY, field: value}
    model = MapRequest if field == "DiscoKey" else RegisterRequest
    with pytest.raises(BadRequest) as info:
        parse_request(model, json.dumps(body).encode())
    assert problem in str(info.value)
    assert SECRET_HEX[:8] not in str(info.value) and SECRET_HEX[-9:-1] not in str(info.value)


def test_keys_are_kept_in_their_canonical_text_form() -> None:
    """Tailscale's parser takes uppercase hex; the node table holds one spelling per key, lowercase."""
    body = {"NodeKey": NODE_KEY.upper().replace("NODEKEY:", "nodekey:"), "DiscoKey": "discokey:" + "CD" * 32}
    req = parse_request(MapRequest, json.dumps(body).encode())
    assert req.NodeKey == NODE_KEY and req.DiscoKey == "discokey:" + "cd" * 32


@pytest.mark.parametrize("body", [b"{", b"not json", b"[1, 2]", b"null", b"\xff\xfe"])
def test_request_not_json(body: bytes) -> None:
    with pytest.raises(BadRequest, match="invalid MapRequest: body"):
        parse_request(MapRequest, body)


def test_request_parses_real_fields() -> None:
    body = json.dumps(
        {
            "Version": 130,
            "NodeKey": NODE_KEY,
            "OldNodeKey": "nodekey:" + "0" * 64,
            "Expiry": "0001-01-01T00:00:00Z",
            "Auth": {"AuthKey": "hskey-auth-x"},
            "NLKey": "nlpub:" + "00" * 32,
            "NodeKeySignature": None,
        }
    ).encode()
    req = parse_request(RegisterRequest, body)
    assert req.NodeKey == NODE_KEY and req.Auth is not None and req.Auth.AuthKey == "hskey-auth-x"
    assert req.expiry is None
    mreq = parse_request(
        MapRequest,
        json.dumps(
            {"NodeKey": NODE_KEY, "DiscoKey": "discokey:" + "0" * 64, "Stream": True, "EndpointTypes": [2]}
        ).encode(),
    )
    assert mreq.DiscoKey == "" and mreq.Stream


def test_early_payload_layout() -> None:
    public = ChallengePublic(bytes(range(32)))
    data = early_payload(public)
    assert data[:5] == EARLY_PAYLOAD_MAGIC == b"\xff\xff\xffTS"
    (length,) = struct.unpack(">I", data[5:9])
    assert length == len(data) - 9
    body = json.loads(data[9:])
    assert body == {"nodeKeyChallenge": "chalpub:" + bytes(range(32)).hex()}


def test_register_response_shape() -> None:
    resp = register_response(error="nope")
    assert set(resp) == {"User", "Login", "NodeKeyExpired", "MachineAuthorized", "AuthURL", "Error"}
    assert resp["MachineAuthorized"] is False and resp["Error"] == "nope"


FIXTURE_HOSTINFO = {
    "IPNVersion": "1.90.9-ERR-BuildInfo",
    "BackendLogID": "5dbe",
    "OS": "linux",
    "OSVersion": "6.18.44",
    "Container": True,
    "Distro": "debian",
    "DistroVersion": "12.11",
    "DistroCodeName": "bookworm",
    "App": "caddy",
    "Desktop": False,
    "Package": "tsnet",
    "Hostname": "nodeb",
    "NoLogsNoSupport": True,
    "Machine": "x86_64",
    "GoArch": "amd64",
    "GoArchVar": "v1",
    "GoVersion": "go1.25.3",
    "Userspace": True,
    "UserspaceRouter": True,
    "AppConnector": False,
    "StateEncrypted": False,
    "NetInfo": {
        "MappingVariesByDestIP": None,
        "WorkingIPv6": False,
        "WorkingUDP": True,
        "HavePortMap": False,
        "PreferredDERP": 999,
        "LinkType": "",
        "DERPLatency": {"999-v4": 0.0012},
        "FirewallMode": "",
    },
    "RoutableIPs": ["10.0.0.0/24", "fd00::/64", "0.0.0.0/0"],
    "RequestTags": ["tag:a"],
    "Services": [{"Proto": "tcp", "Port": 22, "Description": "sshd"}],
    "sshHostKeys": ["ssh-ed25519 AAAA"],
    "Location": {"Country": "Canada", "Latitude": 49.7, "Longitude": -123, "Priority": 10},
    "SomeFutureField": {"anything": [1, "x"]},
}


def test_real_hostinfo_accepted_and_unknown_fields_dropped() -> None:
    check_hostinfo(FIXTURE_HOSTINFO)
    body = json.dumps({"NodeKey": NODE_KEY, "Hostinfo": FIXTURE_HOSTINFO, "Endpoints": ["1.2.3.4:41641"]})
    known = {k: v for k, v in FIXTURE_HOSTINFO.items() if k != "SomeFutureField"}
    assert parse_request(MapRequest, body.encode()).Hostinfo == known


@pytest.mark.parametrize(
    "patch, where",
    [
        ({"OS": 5}, "Hostinfo.OS"),
        ({"Hostname": ["x"]}, "Hostinfo.Hostname"),
        ({"ShieldsUp": "true"}, "Hostinfo.ShieldsUp"),
        ({"Container": 1}, "Hostinfo.Container"),
        ({"RequestTags": "tag:a"}, "Hostinfo.RequestTags"),
        ({"RequestTags": [1]}, "Hostinfo.RequestTags"),
        ({"RoutableIPs": ["10.0.0.0"]}, "Hostinfo.RoutableIPs"),
        ({"RoutableIPs": ["banana/8"]}, "Hostinfo.RoutableIPs"),
        ({"RoutableIPs": [5]}, "Hostinfo.RoutableIPs"),
        ({"Services": [{"Proto": "tcp", "Port": 70000}]}, "Hostinfo.Services"),
        ({"Services": [{"Proto": "tcp", "Port": "22"}]}, "Hostinfo.Services"),
        ({"Services": ["ssh"]}, "Hostinfo.Services"),
        ({"NetInfo": "wifi"}, "Hostinfo.NetInfo"),
        ({"NetInfo": {"PreferredDERP": "1"}}, "Hostinfo.NetInfo.PreferredDERP"),
        ({"NetInfo": {"PreferredDERP": True}}, "Hostinfo.NetInfo.PreferredDERP"),
        ({"NetInfo": {"DERPLatency": {"1-v4": "fast"}}}, "Hostinfo.NetInfo.DERPLatency"),
        ({"Location": {"Latitude": "north"}}, "Hostinfo.Location.Latitude"),
        ({"TPM": "yes"}, "Hostinfo.TPM"),
    ],
)
@pytest.mark.parametrize("model", [RegisterRequest, MapRequest])
def test_hostinfo_peers_cannot_decode_is_refused(
    patch: dict[str, Any], where: str, model: type[Request]
) -> None:
    body = json.dumps({"NodeKey": NODE_KEY, "Hostinfo": {**FIXTURE_HOSTINFO, **patch}}).encode()
    with pytest.raises(BadRequest) as info:
        parse_request(model, body)
    assert str(info.value).startswith(f"invalid {model.__name__}: Hostinfo: {where}"), str(info.value)


def test_hostinfo_nulls_accepted() -> None:
    check_hostinfo({"OS": None, "NetInfo": None, "RoutableIPs": None, "Location": None, "ShieldsUp": None})


@pytest.mark.parametrize(
    "endpoint", ["1.2.3.4:41641", "[fd00::1]:0", "[fe80::1%eth0]:5", "[::ffff:1.2.3.4]:65535"]
)
def test_endpoint_accepted(endpoint: str) -> None:
    assert check_endpoint(endpoint) == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "1.2.3.4",
        "1.2.3.4:",
        "1.2.3.4:65536",
        "fd00::1:80",
        "[1.2.3.4]:80",
        "host.example:80",
        "1.2.3.4:+80",
        "1.2.3.4:080",
        41641,
        "[fd00::1]80",
    ],
)
def test_endpoint_refused(endpoint: object) -> None:
    body = json.dumps({"NodeKey": NODE_KEY, "Endpoints": [endpoint]}).encode()
    with pytest.raises(BadRequest, match="invalid MapRequest: Endpoints"):
        parse_request(MapRequest, body)
