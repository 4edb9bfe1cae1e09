"""Debugging aid: a machine-less pending login to register with `auth register`, for tests."""

from __future__ import annotations

import ipaddress
from typing import Any

from pyheadscale.api import serialize
from pyheadscale.api.errors import invalid
from pyheadscale.api.resource import Resource
from pyheadscale.grpc.schema import pb
from pyheadscale.tailkey import MachinePrivate, NodePrivate


class Debug(Resource):
    async def debug_create_node(self, request: Any) -> Any:
        """A pending login as if a machine named `name` advertising `routes` had asked to join."""
        if not request.key or not request.name or not request.user:
            raise invalid("key (an auth id), name and user are required")
        user = self.store.resolve_user(request.user)
        routes = []
        for route in request.routes:
            try:
                routes.append(str(ipaddress.ip_network(route)))
            except ValueError:
                raise invalid(f"route {route!r} is not an IP prefix") from None
        machine_key = MachinePrivate.generate().public().text
        node_key = NodePrivate.generate().public().text
        try:
            self.context.logins.start(
                machine_key, node_key, {"Hostname": request.name, "RoutableIPs": routes}, auth_id=request.key
            )
        except ValueError as exc:
            raise invalid(str(exc)) from None
        # What would register, as Headscale echoes it: no id or addresses yet, zero times.
        node = pb.Node(
            machine_key=machine_key,
            node_key=node_key,
            disco_key=serialize.ZERO_DISCO_KEY,
            name=request.name,
            user=serialize.user(user),
            last_seen=serialize.zero_time(),
            expiry=serialize.zero_time(),
            created_at=serialize.zero_time(),
            available_routes=routes,
        )
        return pb.DebugCreateNodeResponse(node=node)
