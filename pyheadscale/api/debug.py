"""Debugging aids (`/debug/...`): a machine-less pending login to register with `auth register`, for tests."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from pyheadscale import keys
from pyheadscale.api.errors import invalid
from pyheadscale.api.params import json_body, str_field, str_list_field
from pyheadscale.api.resource import Resource, reply
from pyheadscale.keys import PrivateKey


class Debug(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [web.post("/debug/node", self.create_node)]

    async def create_node(self, request: web.Request) -> web.Response:
        """A pending login as if a machine named `name` advertising `routes` had asked to join."""
        body = await json_body(request)
        auth_id, name, user_ref = str_field(body, "key"), str_field(body, "name"), str_field(body, "user")
        if not auth_id or not name or not user_ref:
            raise invalid("key (an auth id), name and user are required")
        user = self.store.resolve_user(user_ref)
        routes = []
        for route in str_list_field(body, "routes"):
            try:
                routes.append(str(ipaddress.ip_network(route)))
            except ValueError:
                raise invalid(f"route {route!r} is not an IP prefix") from None
        machine_key = keys.machine_public_text(PrivateKey.generate().public())
        node_key = keys.node_public_text(PrivateKey.generate().public())
        try:
            login = self.server.logins.start(
                machine_key, node_key, {"Hostname": name, "RoutableIPs": routes}, auth_id=auth_id
            )
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return reply(
            {
                "node": {
                    "name": name,
                    "given_name": name,
                    "user": {"id": str(user.id), "name": user.name},
                    "machine_key": machine_key,
                    "node_key": node_key,
                    "available_routes": routes,
                    "auth_id": login.auth_id,
                }
            }
        )
