"""The two JSON shapes of headscale.v1 messages: the gateway's protojson (REST) and Go's encoding/json of
the structs (CLI -o json), each round-tripped."""

from __future__ import annotations

import json
from typing import Any

import yaml

from pyheadscale.api.protojson import from_json, to_json
from pyheadscale.cli import gostruct
from pyheadscale.grpc.schema import pb

NODE_JSON_FIELDS = [
    "id",
    "machineKey",
    "nodeKey",
    "discoKey",
    "ipAddresses",
    "name",
    "user",
    "lastSeen",
    "expiry",
    "preAuthKey",
    "createdAt",
    "registerMethod",
    "givenName",
    "online",
    "approvedRoutes",
    "availableRoutes",
    "subnetRoutes",
    "tags",
]
"""headscale.v1.Node in the gateway's JSON, in field order: the names Headscale's REST API answers with."""


def _node() -> Any:
    node = pb.Node(
        id=7,
        machine_key="mkey:ab",
        ip_addresses=["100.64.0.7", "fd7a:115c:a1e0::7"],
        name="laptop",
        user=pb.User(id=2, name="alice"),
        register_method=pb.REGISTER_METHOD_OIDC,
        given_name="laptop",
        online=True,
        tags=["tag:a<b>&c"],
    )
    node.created_at.FromJsonString("2026-01-02T03:04:05.500Z")
    return node


def test_gateway_json_names_every_field_in_camel_case() -> None:
    body = to_json(_node())
    assert list(body) == NODE_JSON_FIELDS
    assert body["id"] == "7" and body["user"]["id"] == "2" and body["user"]["createdAt"] is None
    assert body["lastSeen"] is None and body["preAuthKey"] is None and body["nodeKey"] == ""
    assert body["createdAt"] == "2026-01-02T03:04:05.500Z"
    assert body["registerMethod"] == "REGISTER_METHOD_OIDC" and body["approvedRoutes"] == []


def test_gateway_json_round_trips() -> None:
    node = _node()
    assert from_json(json.loads(json.dumps(to_json(node))), pb.Node) == node
    assert from_json({"ip_addresses": ["100.64.0.1"], "registerMethod": 2}, pb.Node) == pb.Node(
        ip_addresses=["100.64.0.1"], register_method=pb.REGISTER_METHOD_CLI
    ), "proto names and enum numbers are read too"
    assert from_json({"noSuchField": 1, "id": 3}, pb.Node) == pb.Node(id=3), "unknown fields are ignored"


def test_go_json_omits_zero_values_and_keeps_numbers() -> None:
    text = gostruct.dumps_json(_node(), indent=True)
    data = json.loads(text)
    assert data == {
        "id": 7,
        "machine_key": "mkey:ab",
        "ip_addresses": ["100.64.0.7", "fd7a:115c:a1e0::7"],
        "name": "laptop",
        "user": {"id": 2, "name": "alice"},
        "created_at": {"seconds": 1767323045, "nanos": 500000000},
        "register_method": 3,
        "given_name": "laptop",
        "online": True,
        "tags": ["tag:a<b>&c"],
    }
    assert text.startswith('{\n\t"id": 7,') and "\\u003c" in text and "\\u0026" in text
    assert gostruct.dumps_json([], indent=True) == "null", "an empty list is a nil Go slice"
    assert gostruct.dumps_json(pb.ExpireApiKeyResponse(), indent=False) == "{}"


def test_go_yaml_has_every_field_under_lowercased_go_names() -> None:
    text = gostruct.dumps_yaml([_node()])
    data = yaml.safe_load(text)
    assert data[0]["ipaddresses"] == ["100.64.0.7", "fd7a:115c:a1e0::7"] and data[0]["preauthkey"] is None
    assert data[0]["createdat"] == {"seconds": 1767323045, "nanos": 500000000}
    assert data[0]["nodekey"] == "" and data[0]["approvedroutes"] == [] and data[0]["registermethod"] == 3
    assert text.startswith('- id: 7\n  machinekey: mkey:ab\n  nodekey: ""\n')
    assert "  ipaddresses:\n    - 100.64.0.7\n" in text and "  user:\n    id: 2\n" in text
    assert text.endswith("    - tag:a<b>&c\n")
