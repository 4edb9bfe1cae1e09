"""The server's one health check, asked by `GET /health` (Headscale's probe) and the API's Health rpc alike.

Healthy means started (every listener up) and able to reach the database, which Headscale's /health pings too.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from pyheadscale.db.database import Database

STARTING = "server is still starting"
DATABASE_UNREACHABLE = "pinging database: unreachable"


class HealthCheck:
    def __init__(self, database: Database, ready: asyncio.Event) -> None:
        self._database = database
        self._ready = ready

    async def problem(self) -> str | None:
        """What is wrong, in words for the operator, or None when healthy."""
        if not self._ready.is_set():
            return STARTING
        if not await self._database.ping():
            return DATABASE_UNREACHABLE
        return None

    async def handle(self, _request: web.Request) -> web.Response:
        """`GET /health`: 200 `pass`; 503 `starting` until every listener is up; 500 `fail` (as Headscale
        answers) when the database does not."""
        problem = await self.problem()
        if problem is None:
            return web.json_response({"status": "pass"})
        if problem == STARTING:
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "fail"}, status=500)
