"""Interactive logins: approve a waiting machine as a user's node, or reject it (`/auth/...`)."""

from __future__ import annotations

from aiohttp import web

from pyheadscale.api import serialize
from pyheadscale.api.errors import invalid
from pyheadscale.api.params import json_body, str_field
from pyheadscale.api.resource import Resource, reply


async def complete_login(resource: Resource, auth_id: str, user_ref: str) -> web.Response:
    """Register the machine waiting on `auth_id` as `user_ref`'s node (`auth register`, `node register`)."""
    if not auth_id:
        raise invalid("auth_id is required (the id at the end of the login URL)")
    if not user_ref:
        raise invalid("user is required")
    server, store = resource.server, resource.store
    user = store.resolve_user(user_ref)
    expiry = server.register.default_expiry() if server.register else None
    node = await server.logins.approve(store, server.logins.pending(auth_id), user, expiry, method="cli")
    return reply({"node": serialize.node(store, node)})


class AuthFlow(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/auth/pending", self.pending),
            web.post("/auth/register", self.register),
            web.post("/auth/approve", self.approve),
            web.post("/auth/reject", self.reject),
        ]

    async def pending(self, _request: web.Request) -> web.Response:
        logins = self.server.logins.list()
        return reply(
            {
                "pending": [
                    {"auth_id": p.auth_id, "hostname": p.hostname, "machine_key": p.machine_key}
                    for p in logins
                ]
            }
        )

    async def register(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        return await complete_login(self, str_field(body, "auth_id"), str_field(body, "user"))

    async def approve(self, request: web.Request) -> web.Response:
        """Approve a waiting SSH check, or a returning machine's login (it keeps its node and owner)."""
        auth_id = str_field(await json_body(request), "auth_id")
        check = self.server.ssh_checks.get(auth_id)
        if check is not None:
            self.server.ssh_checks.approve(check)
            self.store.audit.record("ssh.check", f"node:{check.dst_id}", "approved", src=check.src_id)
            return reply({"ssh_check": {"src_node_id": check.src_id, "dst_node_id": check.dst_id}})
        login = self.server.logins.pending(auth_id)
        node = self.store.node_by_machine_key(login.machine_key)
        if node is None or node.user_id is None:
            raise invalid("this machine has no node yet: use auth register with --user to choose its owner")
        return await complete_login(self, auth_id, str(node.user_id))

    async def reject(self, request: web.Request) -> web.Response:
        auth_id = str_field(await json_body(request), "auth_id")
        check = self.server.ssh_checks.get(auth_id)
        if check is not None:
            self.server.ssh_checks.reject(check)
            self.store.audit.record("ssh.check", f"node:{check.dst_id}", "rejected", src=check.src_id)
            return reply()
        self.server.logins.reject(self.server.logins.pending(auth_id))
        self.store.audit.record("node.register", f"login:{auth_id[-8:]}", "rejected")
        return reply()
