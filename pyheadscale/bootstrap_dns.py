"""`GET /bootstrap-dns`: the addresses of the DERP map's hostnames, for clients whose own DNS is broken.

As Headscale serves it (beside the embedded DERP relay): a JSON object from each DERP node's HostName to the
addresses it resolves to; names that do not resolve are left out. The endpoint needs no authentication, so
answers are cached: a flood of requests costs one round of lookups per CACHE_SECONDS, not one per request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable

from aiohttp import web

from pyheadscale.tailcfg.derp_map import DERPMap

log = logging.getLogger(__name__)

CACHE_SECONDS = 60.0
LOOKUP_TIMEOUT = 10.0


class BootstrapDNS:
    def __init__(self, derp_map: Callable[[], DERPMap]) -> None:
        self._derp_map = derp_map
        self._answer: dict[str, list[str]] = {}
        self._stamp = float("-inf")
        self._lock = asyncio.Lock()

    def hostnames(self) -> list[str]:
        names = {
            str(node.get("HostName") or "")
            for region in self._derp_map()["Regions"].values()
            for node in region["Nodes"]
        }
        return sorted(n for n in names if n)

    async def answer(self) -> dict[str, list[str]]:
        async with self._lock:
            if time.monotonic() - self._stamp >= CACHE_SECONDS:
                names = self.hostnames()
                found = await asyncio.gather(*(_lookup(n) for n in names))
                self._answer = {n: addrs for n, addrs in zip(names, found, strict=True) if addrs}
                self._stamp = time.monotonic()
            return self._answer

    async def handle(self, _request: web.Request) -> web.Response:
        return web.json_response(await self.answer())


async def _lookup(name: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(name))]
    except ValueError:
        pass
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM), LOOKUP_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        log.debug("bootstrap DNS lookup of %r failed: %s", name, exc)
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
