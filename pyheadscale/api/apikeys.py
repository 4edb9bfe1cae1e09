"""API keys: list, create, expire, delete (`/apikey`). The key text appears once, in the create response."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from pyheadscale.api import serialize
from pyheadscale.api.errors import invalid
from pyheadscale.api.params import field, json_body, optional_id, optional_time_field, str_field
from pyheadscale.api.resource import Resource, reply
from pyheadscale.state.models import ApiKey
from pyheadscale.state.names import now

# Without an expiration Headscale would store a key born expired; we give it the CLI's default lifetime.
DEFAULT_LIFETIME = timedelta(days=90)


class ApiKeys(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/apikey", self.list),
            web.post("/apikey", self.create),
            web.post("/apikey/expire", self.expire),
            web.delete("/apikey/{prefix}", self.delete),
        ]

    def _find(self, key_id: int | None, prefix: str) -> ApiKey:
        if key_id is not None and prefix:
            raise invalid("name the API key by id or by prefix, not both")
        if key_id is not None:
            return self.store.get_api_key(key_id)
        if not prefix:
            raise invalid("name the API key by id or by prefix")
        return self.store.api_key_by_prefix(prefix)

    async def list(self, _request: web.Request) -> web.Response:
        keys = sorted(self.store.api_keys.values(), key=lambda k: k.id)
        return reply({"api_keys": [serialize.api_key(k) for k in keys]})

    async def create(self, request: web.Request) -> web.Response:
        expiration = optional_time_field(await json_body(request), "expiration")
        if expiration is not None and expiration <= now():
            raise invalid("expiration is in the past")
        _key, text = await self.store.create_api_key(expiration or now() + DEFAULT_LIFETIME)
        return reply({"api_key": text})

    async def expire(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        key = self._find(optional_id(field(body, "id"), "id"), str_field(body, "prefix"))
        await self.store.expire_api_key(key.id)
        return reply()

    async def delete(self, request: web.Request) -> web.Response:
        key = self.store.api_key_by_prefix(request.match_info["prefix"])
        await self.store.delete_api_key(key.id)
        return reply()
