"""`/audit`: the recent audit entries the server keeps in memory (who changed which node, user or key)."""

from __future__ import annotations

from aiohttp import web

from pyheadscale.api.errors import invalid
from pyheadscale.api.resource import Resource, reply
from pyheadscale.audit import MEMORY_ENTRIES

DEFAULT_LIMIT = 1000


class Audit(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [web.get("/audit", self.audit_entries)]

    async def audit_entries(self, request: web.Request) -> web.Response:
        query = request.query
        text = query.get("limit", str(DEFAULT_LIMIT))
        if not text.isdigit() or not 1 <= int(text) <= MEMORY_ENTRIES:
            raise invalid(f"limit must be a number from 1 to {MEMORY_ENTRIES}")
        entries = self.store.audit.query(
            action=query.get("action") or None, target=query.get("target") or None, limit=int(text)
        )
        return reply({"entries": entries})
