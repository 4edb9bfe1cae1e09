"""dns.extra_records_path: records from a JSON file reach every node, and a change to the file is pushed."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pyheadscale import extra_records
from pyheadscale.config import ConfigError
from tests.live_server import StartLive

GRAFANA = {"name": "grafana.tailnet.internal", "type": "A", "value": "100.64.0.3"}
CANONICAL = {"Name": "grafana.tailnet.internal", "Type": "A", "Value": "100.64.0.3"}


def write_records(path: Path, records: Any) -> None:
    """Replace the file atomically, as editors and config management do."""
    staging = path.with_suffix(".new")
    staging.write_text(records if isinstance(records, str) else json.dumps(records))
    os.replace(staging, path)


async def next_with_records(stream: Any, limit: float) -> list[dict[str, str]]:
    async with asyncio.timeout(limit):
        while True:
            message = await stream.__anext__()
            if "DNSConfig" in message:
                return list(message["DNSConfig"].get("ExtraRecords", []))


async def test_records_reach_nodes_and_file_changes_are_pushed(start_live: StartLive, tmp_path: Path) -> None:
    path = tmp_path / "records.json"
    write_records(path, [GRAFANA])
    live = await start_live(dns={"extra_records_path": str(path)})
    node = await live.node()
    client, node_key = node.client, node.node_key
    try:
        stream = client.map_stream(node_key)
        assert await next_with_records(stream, 10) == [CANONICAL]

        write_records(path, "[not json")  # a bad edit: logged, the last good records stay
        await asyncio.sleep(extra_records.POLL_SECONDS * 2.5)
        wiki = {"Name": "wiki.tailnet.internal", "Type": "AAAA", "Value": "fd7a:115c:a1e0::3"}
        write_records(path, [GRAFANA, wiki])
        assert await next_with_records(stream, 15) == [CANONICAL, wiki]
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read"),
        ("{broken", "not valid JSON"),
        ('{"name": "x"}', "JSON array"),
        ('[{"name": "x", "type": "A", "value": 3}]', "value must be a string"),
    ],
)
async def test_unusable_file_at_start_is_an_error_naming_the_key(
    content: str | None, problem: str, start_live: StartLive, tmp_path: Path
) -> None:
    path = tmp_path / "records.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        await start_live(dns={"extra_records_path": str(path)})
    assert str(info.value).startswith("dns.extra_records_path:")
    assert problem in str(info.value)


def test_field_names_match_case_insensitively_and_empty_means_none() -> None:
    assert extra_records.parse_records(json.dumps([CANONICAL]).encode()) == [CANONICAL]
    assert extra_records.parse_records(json.dumps([GRAFANA]).encode()) == [CANONICAL]
    assert extra_records.parse_records(b"  \n") == []
    with pytest.raises(ValueError, match="larger than"):
        extra_records.parse_records(b" " * (extra_records.MAX_FILE_BYTES + 1))
