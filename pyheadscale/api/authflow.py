"""Interactive logins: register a waiting machine as a user's node, approve a returning one, or reject it.

`GET /auth/pending` (pyheadscale's addition) lists the logins waiting, for `auth list` and `auth approve`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pyheadscale.api import serialize
from pyheadscale.api.errors import invalid
from pyheadscale.api.resource import Resource, reply
from pyheadscale.auth.interactive import AUTH_ID_PREFIX
from pyheadscale.grpc.schema import pb

AUTH_ID_LENGTH = len(AUTH_ID_PREFIX) + 24


def checked_auth_id(auth_id: str) -> str:
    """An auth id as login URLs carry it (`hskey-authreq-` and 24 characters), else a 400 saying so."""
    if not auth_id.startswith(AUTH_ID_PREFIX) or len(auth_id) != AUTH_ID_LENGTH:
        raise invalid(
            f"invalid auth_id: expected {AUTH_ID_PREFIX!r} followed by 24 characters, got {auth_id[:60]!r}"
        )
    return auth_id


async def complete_login(resource: Resource, auth_id: str, user_ref: str) -> Any:
    """Register the machine waiting on `auth_id` as `user_ref`'s node; the node message."""
    if not auth_id:
        raise invalid("auth_id is required (the id at the end of the login URL)")
    if not user_ref:
        raise invalid("user is required")
    context, store = resource.context, resource.store
    user = store.resolve_user(user_ref)
    logins = context.logins
    node = await logins.approve(store, logins.pending(auth_id), user, context.login_expiry(), method="cli")
    return serialize.node(store, node)


class AuthFlow(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [web.get("/auth/pending", self.pending)]

    async def pending(self, _request: web.Request) -> web.Response:
        logins = self.context.logins.list()
        return reply(
            {
                "pending": [
                    {"authId": p.auth_id, "hostname": p.hostname, "machineKey": p.machine_key} for p in logins
                ]
            }
        )

    async def auth_register(self, request: Any) -> Any:
        return pb.AuthRegisterResponse(node=await complete_login(self, request.auth_id, request.user))

    def _settle_ssh_check(self, auth_id: str, *, approve: bool) -> bool:
        """Approve or reject the waiting SSH check `auth_id` names, and audit it; False when none waits."""
        check = self.context.ssh_checks.get(auth_id)
        if check is None:
            return False
        if approve:
            self.context.ssh_checks.approve(check)
        else:
            self.context.ssh_checks.reject(check)
        outcome = "approved" if approve else "rejected"
        self.store.audit.record("ssh.check", f"node:{check.dst_id}", outcome, src=check.src_id)
        return True

    async def auth_approve(self, request: Any) -> Any:
        """Approve a waiting SSH check, or a returning machine's login (it keeps its node and owner)."""
        if self._settle_ssh_check(request.auth_id, approve=True):
            return pb.AuthApproveResponse()
        login = self.context.logins.pending(checked_auth_id(request.auth_id))
        node = self.store.node_by_machine_key(login.machine_key)
        if node is None or node.user_id is None:
            raise invalid("this machine has no node yet: use auth register with --user to choose its owner")
        await complete_login(self, request.auth_id, str(node.user_id))
        return pb.AuthApproveResponse()

    async def auth_reject(self, request: Any) -> Any:
        """Refuse a waiting SSH check, or a pending login."""
        if self._settle_ssh_check(request.auth_id, approve=False):
            return pb.AuthRejectResponse()
        logins = self.context.logins
        logins.reject(logins.pending(checked_auth_id(request.auth_id)))
        self.store.audit.record("node.register", f"login:{request.auth_id[-8:]}", "rejected")
        return pb.AuthRejectResponse()
