"""The policy in force (`/policy`): read it in either mode, replace it in `database` mode."""

from __future__ import annotations

from aiohttp import web

from pyheadscale.api import serialize
from pyheadscale.api.errors import ApiError, GrpcCode, invalid
from pyheadscale.api.params import json_body, str_field
from pyheadscale.api.resource import Resource, reply
from pyheadscale.policy import PolicyError
from pyheadscale.state.policy import PolicyManager


class Policy(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [web.get("/policy", self.get), web.put("/policy", self.set)]

    @property
    def manager(self) -> PolicyManager:
        manager = self.server.policy
        if manager is None:
            raise ApiError(GrpcCode.FAILED_PRECONDITION, "server is still starting")
        return manager

    def _reply(self) -> web.Response:
        manager = self.manager
        return reply({"policy": manager.text or "", "updatedAt": serialize.timestamp(manager.updated_at)})

    async def get(self, _request: web.Request) -> web.Response:
        return self._reply()

    async def set(self, request: web.Request) -> web.Response:
        text = str_field(await json_body(request), "policy")
        if not text.strip():
            raise invalid("policy is required: the HuJSON policy document as a string")
        try:
            await self.manager.set_policy(text)
        except PolicyError as exc:
            raise invalid(f"setting policy: {exc}") from None
        return self._reply()
