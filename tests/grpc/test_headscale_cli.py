"""Headscale v0.29.2's own CLI manages pyheadscale over gRPC, remotely (TLS, API key) and locally (the unix
socket, shared with the REST API), inside a private namespace."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.e2e.netns import run_driver

DRIVER = Path(__file__).with_name("headscale_cli_driver.py")


def test_headscale_cli_drives_pyheadscale(reference_binary: Callable[[str], Path]) -> None:
    binary = reference_binary("headscale")
    result = run_driver(DRIVER, [str(binary)], timeout=300)
    runs = {" ".join(run["argv"]): run for run in result["runs"]}

    users = runs["users list -o json"]
    assert users["code"] == 0, users
    assert [(u["id"], u["name"]) for u in json.loads(users["out"])] == [(1, "alice")]
    assert "alice" in runs["users list"]["out"]

    nodes = runs["nodes list -o json"]
    assert nodes["code"] == 0, nodes
    listed = json.loads(nodes["out"])
    assert listed[0]["name"] == "router" and listed[0]["available_routes"] == ["10.0.0.0/24"]
    assert "router" in runs["nodes list"]["out"]

    created = runs["preauthkeys create -u 1 --reusable -o json"]
    assert created["code"] == 0, created
    assert json.loads(created["out"])["key"].startswith("hskey-auth-") and result["reusable_keys"] == 1

    approved = runs["nodes approve-routes -i 1 -r 10.0.0.0/24"]
    assert approved["code"] == 0, approved
    assert result["approved_routes"] == ["10.0.0.0/24"]

    assert runs["users create bob -o json"]["code"] == 0 and result["users"] == ["alice", "bob", "carol"]
    missing = runs["nodes delete -i 99 --force"]
    assert missing["code"] != 0 and "node 99 not found" in missing["err"] + missing["out"], missing
    local_list, local_create = result["local"]
    assert local_list["code"] == 0, local_list
    assert [u["name"] for u in json.loads(local_list["out"])] == ["alice", "bob"]
    assert local_create["code"] == 0 and "carol" in result["users"], local_create
    refused = result["refused"]
    assert refused["code"] != 0 and "invalid or expired API key" in refused["err"] + refused["out"], refused
