"""The policy: read it in either mode, replace it in `database` mode, check one against the live tailnet."""

from __future__ import annotations

from typing import Any

from pyheadscale.api import serialize
from pyheadscale.api.errors import invalid
from pyheadscale.api.resource import Resource
from pyheadscale.grpc.schema import pb
from pyheadscale.policy import PolicyError
from pyheadscale.state.policy import PolicyManager


class Policy(Resource):
    @property
    def manager(self) -> PolicyManager:
        return self.context.policy

    async def get_policy(self, _request: Any) -> Any:
        manager = self.manager
        return pb.GetPolicyResponse(
            policy=manager.text or "", updated_at=serialize.timestamp(manager.updated_at)
        )

    async def set_policy(self, request: Any) -> Any:
        if not request.policy.strip():
            raise invalid("policy is required: the HuJSON policy document as a string")
        try:
            await self.manager.set_policy(request.policy)
        except PolicyError as exc:
            raise invalid(f"setting policy: {exc}") from None
        manager = self.manager
        return pb.SetPolicyResponse(
            policy=manager.text or "", updated_at=serialize.timestamp(manager.updated_at)
        )

    async def check_policy(self, request: Any) -> Any:
        """Compile `policy` against the current users and nodes, running its `tests`; nothing changes."""
        try:
            self.manager.check(request.policy)
        except PolicyError as exc:
            raise invalid(str(exc)) from None
        return pb.CheckPolicyResponse()
