"""Headscale v0.29's metric names and labels are served beside pyheadscale's own, so its dashboards work."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.live_server import StartLive
from tests.ports import free_port


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_headscale_metric_names(start_live: StartLive) -> None:
    port = free_port()
    live = await start_live(metrics_listen_addr=f"127.0.0.1:{port}")
    server = live.server
    node = await live.node()
    client, node_key = node.client, node.node_key
    try:
        stream = client.map_stream(node_key)
        assert "Node" in await asyncio.wait_for(stream.__anext__(), 10)
        lite: dict[str, Any] = {
            "Version": client.capver,
            "NodeKey": node_key.public().text,
            "OmitPeers": True,
            "Stream": False,
            "Endpoints": ["192.0.2.7:41641"],
        }
        status, _ = await client.request("POST", "/machine/map", lite)
        assert status == 200
        await stream.aclose()
    finally:
        await client.close()
    async with aiohttp.ClientSession() as http, http.get(f"{server.config.server_url}/health") as response:
        assert response.status == 200

    for _ in range(100):
        samples = await scrape(port)
        reasons = ("done", "cancelled")
        ended = sum(value(samples, "headscale_mapresponse_ended_total", reason=r) for r in reasons)
        if ended:
            break
        await asyncio.sleep(0.1)
    assert ended == 1
    assert value(samples, "headscale_mapresponse_sent_total", status="ok", type="full") >= 1
    assert value(samples, "headscale_mapresponse_generated_total", response_type="full") >= 1
    assert value(samples, "headscale_mapresponse_endpoint_updates_total", status="ok") == 1
    assert value(samples, "headscale_nodestore_nodes") == 1
    health = {"status": "200", "endpoint": "GET /health", "proto": "HTTP/1.1"}
    assert value(samples, "http_requests_total", host="", client_aborted="", **health) == 1
    assert value(samples, "http_request_duration_seconds_count", status="200", endpoint="GET /health") == 1
    assert value(samples, "http_requests_inflight", host="", proto="HTTP/1.1") == 0
