"""Pings of nodes through their map stream, answered by `HEAD /machine/ping-response?id=<ping id>`.

The server puts a tailcfg.PingRequest with a callback URL in a node's map stream; the client proves it is
alive by requesting that URL (a HEAD, outside the Noise channel). The unguessable id is the only
authentication the callback needs: it names one outstanding ping and is forgotten once answered or given up.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from aiohttp import web

PATH = "/machine/ping-response"
#: Outstanding pings are bounded: the HA prober sends one per router per cycle and cancels what times out.
MAX_PENDING = 10_000


class PingTracker:
    def __init__(self) -> None:
        self._pending: dict[str, tuple[int, float, asyncio.Future[float]]] = {}
        self.answered = 0

    def register(self, node_id: int) -> tuple[str, asyncio.Future[float]]:
        """A new ping id for `node_id` and the future that gets its round-trip time in seconds."""
        if len(self._pending) >= MAX_PENDING:
            raise OverflowError("too many pings outstanding")
        ping_id = secrets.token_urlsafe(12)
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pending[ping_id] = (node_id, time.monotonic(), future)
        return ping_id, future

    def complete(self, ping_id: str) -> bool:
        entry = self._pending.pop(ping_id, None)
        if entry is None:
            return False
        _, started, future = entry
        self.answered += 1
        if not future.done():
            future.set_result(time.monotonic() - started)
        return True

    def cancel(self, ping_id: str) -> None:
        entry = self._pending.pop(ping_id, None)
        if entry is not None and not entry[2].done():
            entry[2].cancel()

    def close(self) -> None:
        for ping_id in list(self._pending):
            self.cancel(ping_id)

    async def handle(self, request: web.Request) -> web.Response:
        """`HEAD /machine/ping-response?id=…`: 200 for an outstanding ping, 404 otherwise (as Headscale)."""
        if request.method != "HEAD":
            return web.Response(status=405, text="method not allowed\n")
        ping_id = request.query.get("id", "")
        if not ping_id:
            return web.Response(status=400, text="missing ping ID\n")
        if self.complete(ping_id):
            return web.Response(status=200)
        return web.Response(status=404, text="unknown or expired ping\n")
