"""`/health`: whether the server can reach its database."""

from __future__ import annotations

from aiohttp import web

from pyheadscale.api.errors import ApiError, GrpcCode
from pyheadscale.api.resource import Resource, reply


class Health(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [web.get("/health", self.health)]

    async def health(self, _request: web.Request) -> web.Response:
        db = self.server.db
        if db is None or not await db.ping():
            raise ApiError(GrpcCode.INTERNAL, "database unreachable")
        return reply({"database_connectivity": True})
