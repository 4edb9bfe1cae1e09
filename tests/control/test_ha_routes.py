"""HA subnet routers: the primary is chosen among online advertisers, fails over when it goes offline or stops
answering health probes, and does not flap back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.live_server import ClientNode, LiveServer, MapReader, StartLive

ROUTE = "10.0.0.0/24"


def hostinfo(name: str) -> dict[str, Any]:
    return {"Hostname": name, "OS": "linux", "RoutableIPs": [ROUTE]}


class Router:
    """A routing node's map stream that answers the server's PingRequests while `answering` is set."""

    def __init__(self, live: LiveServer, node: ClientNode, name: str) -> None:
        self.live, self.node, self.name = live, node, name
        self.answering = True
        self.pings_seen = 0
        self._pinged = asyncio.Event()
        self.id: int = live.record(node).id
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        stream: AsyncIterator[dict[str, Any]] = self.node.client.map_stream(
            self.node.node_key, extra={"Hostinfo": hostinfo(self.name)}
        )
        async with aiohttp.ClientSession() as http:
            async for message in stream:
                ping = message.get("PingRequest")
                if ping is None:
                    continue
                self.pings_seen += 1
                self._pinged.set()
                if self.answering:
                    async with http.head(ping["URL"]) as resp:
                        assert resp.status == 200

    async def wait_pings(self, count: int, within: float = 20.0) -> None:
        async with asyncio.timeout(within):
            while self.pings_seen < count:
                self._pinged.clear()
                await self._pinged.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


async def make_router(live: LiveServer, name: str) -> Router:
    node = await live.node(name, hostinfo=hostinfo(name))
    router = Router(live, node, name)
    await live.store.set_approved_routes(router.id, [ROUTE])
    return router


def primary_of(peers: list[dict[str, Any]]) -> set[int]:
    return {p["ID"] for p in peers if ROUTE in (p.get("PrimaryRoutes") or [])}


class Viewer:
    """A plain node following its map: which peer it is told carries the route."""

    def __init__(self, reader: MapReader) -> None:
        self.reader = reader
        self.primary: set[int] = set()

    @classmethod
    async def open(cls, live: LiveServer) -> Viewer:
        node = await live.node("viewer")
        viewer = cls(MapReader(node.client.map_stream(node.node_key)))
        full = await viewer.reader.next()
        viewer.primary = primary_of(full["Peers"])
        return viewer

    async def wait_primary(self, expected: set[int], within: float = 15.0) -> None:
        def seen(message: dict[str, Any]) -> bool:
            changed = message.get("PeersChanged") or message.get("Peers") or []
            for peer in changed:
                routes = peer.get("PrimaryRoutes") or []
                if ROUTE in routes:
                    self.primary.add(peer["ID"])
                else:
                    self.primary.discard(peer["ID"])
            return self.primary == expected

        if self.primary != expected:
            await self.reader.wait_for(seen, within)


async def test_primary_fails_over_when_offline_and_does_not_flap_back(start_live: StartLive) -> None:
    live: LiveServer = await start_live(node={"routes": {"ha": {"probe_interval": "0"}}})
    r1, r2 = await make_router(live, "r1"), await make_router(live, "r2")
    viewer = await Viewer.open(live)
    assert viewer.primary == set(), "a router that is not online carries nothing"
    r1.start()
    await viewer.wait_primary({r1.id})
    r2.start()
    await asyncio.sleep(0.5)
    assert viewer.primary == {r1.id}, "the first online router keeps the route"

    await r1.stop()
    await viewer.wait_primary({r2.id})

    r1.start()
    await asyncio.sleep(1.0)
    assert viewer.primary == {r2.id}, "the router coming back must not take the route back"
    assert live.server.policy is not None
    assert live.server.policy.primary_routes_of(r2.id) == [ROUTE]
    await r1.stop()
    await r2.stop()
    await viewer.wait_primary(set())
    await viewer.reader.close()


async def test_router_silent_to_health_probes_loses_the_route(start_live: StartLive) -> None:
    live: LiveServer = await start_live(
        node={"routes": {"ha": {"probe_interval": "2s", "probe_timeout": "1s"}}}
    )
    r1, r2 = await make_router(live, "r1"), await make_router(live, "r2")
    viewer = await Viewer.open(live)
    r1.start()
    await viewer.wait_primary({r1.id})
    r2.start()
    # r1 stops answering but stays connected: the probes, not presence, must find it out.
    r1.answering = False
    await viewer.wait_primary({r2.id}, within=20)
    assert r1.pings_seen > 0 and r2.pings_seen > 0

    # Answering again makes r1 healthy, but r2 keeps the route.
    r1.answering = True
    await r1.wait_pings(r1.pings_seen + 2)
    assert viewer.primary == {r2.id}
    await r1.stop()
    await r2.stop()
    await viewer.reader.close()


async def test_all_silent_keeps_the_previous_primary(start_live: StartLive) -> None:
    live: LiveServer = await start_live(
        node={"routes": {"ha": {"probe_interval": "2s", "probe_timeout": "1s"}}}
    )
    r1, r2 = await make_router(live, "r1"), await make_router(live, "r2")
    viewer = await Viewer.open(live)
    r1.answering = r2.answering = False
    r1.start()
    await viewer.wait_primary({r1.id})
    r2.start()
    await r1.wait_pings(3)
    assert viewer.primary == {r1.id}, "moving the route to another silent router would not help"
    await r1.stop()
    await r2.stop()
    await viewer.reader.close()


@pytest.mark.parametrize(
    ("method", "query", "status"), [("HEAD", "", 400), ("HEAD", "?id=nope", 404), ("GET", "?id=x", 405)]
)
async def test_ping_response_endpoint(live: LiveServer, method: str, query: str, status: int) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{live.url}/machine/ping-response{query}") as resp,
    ):
        assert resp.status == status


async def test_a_new_policy_keeps_the_elected_primary(start_live: StartLive) -> None:
    live: LiveServer = await start_live(node={"routes": {"ha": {"probe_interval": "0"}}})
    r1, r2 = await make_router(live, "r1"), await make_router(live, "r2")
    viewer = await Viewer.open(live)
    r1.start()
    await viewer.wait_primary({r1.id})
    r2.start()
    await r1.stop()
    await viewer.wait_primary({r2.id})
    r1.start()
    await asyncio.sleep(0.5)
    assert live.server.policy is not None
    await live.server.policy.apply('{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}')
    full = await viewer.reader.wait_for(lambda m: "Peers" in m)  # a new policy: everyone's full map
    assert primary_of(full["Peers"]) == {r2.id}
    assert live.server.policy.primary_routes_of(r2.id) == [ROUTE]
    await r1.stop()
    await r2.stop()
    await viewer.reader.close()
