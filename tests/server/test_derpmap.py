"""The effective DERP map: embedded region, derp.paths files (YAML or JSON), derp.urls with refresh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pyheadscale.config import build_config
from pyheadscale.derpmap import DERPMapError, DERPMapSource, embedded_region, parse_derp_map
from tests.live_server import StartLive
from tests.ports import free_port

YAML_MAP = """
regions:
  900:
    regionid: 900
    regioncode: home
    regionname: Home relay
    nodes:
      - name: 900a
        regionid: 900
        hostname: derp.home.example
        stunport: 3478
        derpport: 443
"""


def region(region_id: int, host: str) -> dict[str, Any]:
    return {
        "RegionID": region_id,
        "RegionCode": f"r{region_id}",
        "RegionName": host,
        "Nodes": [{"Name": f"{region_id}a", "RegionID": region_id, "HostName": host}],
    }


def test_embedded_region_follows_server_url(tmp_path: Path) -> None:
    config = build_config(
        {
            "server_url": "https://hs.example.com",
            "derp": {"server": {"enabled": True, "stun_listen_addr": "0.0.0.0:3479", "ipv4": "198.51.100.7"}},
        },
        data_dir=tmp_path,
    )
    assert embedded_region(config) == {
        "RegionID": 999,
        "RegionCode": "headscale",
        "RegionName": "Headscale Embedded DERP",
        "Nodes": [
            {
                "Name": "999",
                "RegionID": 999,
                "HostName": "hs.example.com",
                "DERPPort": 443,
                "STUNPort": 3479,
                "IPv4": "198.51.100.7",
            }
        ],
    }


def test_headscale_yaml_keys_are_read_case_insensitively() -> None:
    import yaml

    [(region_id, parsed)] = parse_derp_map(yaml.safe_load(YAML_MAP), "map.yaml").items()
    assert region_id == 900
    assert parsed["RegionCode"] == "home"
    assert parsed["Nodes"] == [
        {"Name": "900a", "RegionID": 900, "HostName": "derp.home.example", "STUNPort": 3478, "DERPPort": 443}
    ]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be a mapping"),
        ({"Regions": []}, "missing 'Regions'"),
        ({"Regions": {"x": {"Nodes": []}}}, "no numeric RegionID"),
        ({"Regions": {"1": {"Nodes": "nope"}}}, "'Nodes' must be a list"),
    ],
)
def test_malformed_maps_name_the_problem(document: Any, message: str) -> None:
    with pytest.raises(DERPMapError, match=message):
        parse_derp_map(document, "src")


async def test_sources_merge_and_urls_refresh_keeping_last_good(tmp_path: Path) -> None:
    served: dict[str, Any] = {
        "status": 200,
        "body": {"Regions": {"1": region(1, "one"), "900": region(900, "url")}},
    }

    async def handler(_request: web.Request) -> web.Response:
        return web.json_response(served["body"], status=served["status"])

    app = web.Application()
    app.router.add_get("/derpmap", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    (tmp_path / "map.yaml").write_text(YAML_MAP)
    try:
        config = build_config(
            {
                "server_url": "http://127.0.0.1:8080",
                "derp": {
                    "server": {"enabled": True, "stun_listen_addr": "127.0.0.1:3478"},
                    "urls": [f"http://127.0.0.1:{port}/derpmap"],
                    "paths": ["map.yaml"],
                },
            },
            data_dir=tmp_path,
        )
        changes: list[int] = []
        source = DERPMapSource(config, on_change=lambda: changes.append(1))
        await source.start()
        regions = source.current["Regions"]
        assert sorted(regions) == ["1", "900", "999"]
        assert regions["900"]["RegionCode"] == "home", "a file overrides a URL for the same region"
        assert regions["999"]["RegionCode"] == "headscale"

        served["status"] = 500
        await source.refresh()
        assert sorted(source.current["Regions"]) == ["1", "900", "999"], (
            "a failed fetch keeps the last regions"
        )

        served.update(status=200, body={"Regions": {"2": region(2, "two")}})
        await source.refresh()
        assert sorted(source.current["Regions"]) == ["2", "900", "999"]
        assert changes, "a changed map is announced"
        await source.close()
    finally:
        await runner.cleanup()


async def test_missing_derp_path_file_is_a_clear_error(tmp_path: Path) -> None:
    config = build_config({"derp": {"paths": ["absent.yaml"]}}, data_dir=tmp_path)
    with pytest.raises(DERPMapError, match=r"derp\.paths: cannot read .*absent\.yaml"):
        await DERPMapSource(config).start()


async def test_effective_map_is_served_at_derpmap_default(start_live: StartLive) -> None:
    stun = free_port()
    server = (
        await start_live(derp={"server": {"enabled": True, "stun_listen_addr": f"127.0.0.1:{stun}"}})
    ).server
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.config.server_url}/derpmap/default") as resp,
    ):
        body = json.loads(await resp.text())
    node = body["Regions"]["999"]["Nodes"][0]
    assert (node["HostName"], node["IPv4"], node["STUNPort"]) == ("127.0.0.1", "127.0.0.1", stun)
    assert node["DERPPort"] == int(server.config.server_url.rsplit(":", 1)[1])
