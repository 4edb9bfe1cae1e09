"""Replaying recorded tsnet v1.90.9 traffic (fixtures/tsnet-1.90.9) against a live server.

Each fixture line is one decrypted inner request of a real client. We send the same bodies in the same order
through our own TS2021 client, with a fresh node key and a real preauth key substituted, and check each
answer is what the real client needs to proceed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.live_server import LiveServer, MapReader

FIXTURES = sorted((Path(__file__).resolve().parents[2] / "fixtures" / "tsnet-1.90.9").glob("*.jsonl"))


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_fixtures_present() -> None:
    assert len(FIXTURES) >= 2, "recorded tsnet fixtures are missing"


def substitute(entry: dict[str, Any], node_key: str, auth_key: str) -> dict[str, Any]:
    body = json.loads(entry["body"])
    body["NodeKey"] = node_key
    if isinstance(body.get("Auth"), dict) and "AuthKey" in body["Auth"]:
        body["Auth"]["AuthKey"] = auth_key
    return dict(body)


async def replay(live: LiveServer, path: Path, auth_key: str, readers: list[MapReader]) -> dict[str, Any]:
    machine_key = MachinePrivate.generate()
    node_key = NodePrivate.generate()
    node_key_text = node_key.public().text
    client = await live.client(machine_key)
    assert client.early_payload is not None
    assert client.early_payload["nodeKeyChallenge"].startswith("chalpub:")
    first_map: dict[str, Any] = {}
    for entry in load(path):
        assert (entry["method"], entry["path"]) in {("POST", "/machine/register"), ("POST", "/machine/map")}
        body = substitute(entry, node_key_text, auth_key)
        if entry["path"] == "/machine/register":
            status, data = await client.request("POST", "/machine/register", body)
            assert status == 200, data
            answer = json.loads(data)
            assert (
                answer["MachineAuthorized"] is True
                and answer["Error"] == ""
                and answer["NodeKeyExpired"] is False
            )
            assert answer["User"]["ID"] > 0 and answer["Login"]["LoginName"]
        elif body.get("Stream"):
            reader = MapReader(
                client.map_stream(node_key, compress=body.get("Compress") == "zstd", extra=body)
            )
            readers.append(reader)
            first_map = await reader.next()
            for field in ("Node", "DERPMap", "Peers", "PacketFilters", "DNSConfig", "UserProfiles"):
                assert field in first_map, field
            assert first_map["Node"]["Key"] == node_key_text
            assert first_map["Node"]["MachineAuthorized"] is True
            assert first_map["Node"]["Addresses"]
            assert first_map["Node"]["DiscoKey"] == body["DiscoKey"]
        else:
            assert body.get("OmitPeers") and not body.get("Stream")
            status, data = await client.request("POST", "/machine/map", body)
            assert status == 200, data
            if body.get("Endpoints"):
                node = live.record(node_key_text)
                assert node.endpoints == body["Endpoints"]
    assert first_map, "fixture had no streaming map request"
    return first_map


async def test_replay_all_fixtures(live: LiveServer) -> None:
    auth_key = await live.preauth_key()
    readers: list[MapReader] = []
    maps = []
    try:
        for path in FIXTURES:
            maps.append(await replay(live, path, auth_key, readers))
        # the first node saw the later ones join, the last one got them all in its first map
        first_ids = {maps[0]["Node"]["ID"]}
        later = {m["Node"]["ID"] for m in maps[1:]}
        assert {p["ID"] for p in maps[-1]["Peers"]} == {m["Node"]["ID"] for m in maps[:-1]}
        seen: set[int] = set()

        def saw_all(message: dict[str, Any]) -> bool:
            seen.update(p["ID"] for p in message.get("PeersChanged", []))
            return later <= seen

        await readers[0].wait_for(saw_all)
        assert first_ids.isdisjoint(later)
    finally:
        for reader in readers:
            await reader.close()


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
async def test_replay_each_fixture_alone(live: LiveServer, path: Path) -> None:
    readers: list[MapReader] = []
    try:
        first = await replay(live, path, await live.preauth_key(), readers)
        assert first["Peers"] == []
        assert first["CollectServices"] is False
    finally:
        for reader in readers:
            await reader.close()


async def test_recorder_writes_replayable_fixtures(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With PYHEADSCALE_RECORD_DIR set, a session is recorded in the fixture format, its auth key masked."""
    record_dir = tmp_path / "recorded"
    monkeypatch.setenv("PYHEADSCALE_RECORD_DIR", str(record_dir))
    key = await live.preauth_key()
    node = await live.node("recorded", auth_key=key)
    status, _ = await node.client.request(
        "POST", "/machine/map", {"Version": 130, "NodeKey": node.node_key_text, "OmitPeers": True}
    )
    assert status == 200
    (path,) = record_dir.iterdir()
    assert path.name == node.machine_key_text.removeprefix("mkey:")[:16] + ".jsonl"
    assert key not in path.read_text()
    entries = load(path)
    assert [(e["method"], e["path"]) for e in entries] == [
        ("POST", "/machine/register"),
        ("POST", "/machine/map"),
    ]
    assert set(entries[0]) >= set(load(FIXTURES[0])[0]) - {"time"}
    assert json.loads(entries[0]["body"])["Auth"]["AuthKey"] == "<redacted>"
    # and the recording replays like the real client's
    monkeypatch.delenv("PYHEADSCALE_RECORD_DIR")
    body = substitute(entries[0], NodePrivate.generate().public().text, key)
    client = await live.client()
    status, data = await client.request("POST", "/machine/register", body)
    assert status == 200 and json.loads(data)["MachineAuthorized"]
