"""Replaying recorded traffic of the official tailscaled v1.90.9 (fixtures/tailscaled-1.90.9).

Recorded in the namespace lab of tests/e2e (tailscaled_driver.py --record): two daemons with a kernel TUN
joining with a preauth key behind NATs, streaming their maps and sending endpoint updates as STUN finds their
public addresses; `b.jsonl` also moves to another network and reconnects. The replay is the one of
test_replay.py: the same bodies in the same order through our own TS2021 client, keys substituted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.control.test_replay import load, replay
from tests.live_server import LiveServer, MapReader

FIXTURES = sorted((Path(__file__).resolve().parents[2] / "fixtures" / "tailscaled-1.90.9").glob("*.jsonl"))


def bodies(path: Path) -> list[dict[str, Any]]:
    return [json.loads(entry["body"]) for entry in load(path)]


def test_fixtures_are_tailscaled_with_a_tun() -> None:
    assert len(FIXTURES) >= 2, "recorded tailscaled fixtures are missing"
    for path in FIXTURES:
        [register, *maps] = bodies(path)
        assert register["Hostinfo"]["IPNVersion"].startswith("1.90.9"), path
        assert not register["Hostinfo"].get("Userspace"), path  # kernel TUN, not tsnet's netstack
        assert any(m.get("Stream") for m in maps) and any(m.get("Endpoints") for m in maps), path


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
async def test_replay_tailscaled_session(live: LiveServer, path: Path) -> None:
    readers: list[MapReader] = []
    try:
        first = await replay(live, path, await live.preauth_key(), readers)
        assert first["Peers"] == []
        assert first["Node"]["Hostinfo"]["Hostname"] == bodies(path)[0]["Hostinfo"]["Hostname"]
    finally:
        for reader in readers:
            await reader.close()
