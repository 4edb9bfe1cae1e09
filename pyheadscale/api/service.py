"""headscale.v1.HeadscaleService: every rpc, one method each, taking and returning headscale.v1 messages.

The REST gateway (api/gateway.py) and the gRPC server (grpc/server.py) both call this one object, built over
the API's context (api/context.py).
"""

from __future__ import annotations

from aiohttp import web

from pyheadscale.api.apikeys import ApiKeys
from pyheadscale.api.audit import Audit
from pyheadscale.api.authflow import AuthFlow
from pyheadscale.api.debug import Debug
from pyheadscale.api.health import Health
from pyheadscale.api.nodes import Nodes
from pyheadscale.api.policy import Policy
from pyheadscale.api.preauthkeys import PreAuthKeys
from pyheadscale.api.users import Users

PARTS = (Users, PreAuthKeys, Nodes, AuthFlow, ApiKeys, Policy, Health, Debug, Audit)


class HeadscaleService(Users, PreAuthKeys, Nodes, AuthFlow, ApiKeys, Policy, Health, Debug, Audit):
    """The parts composed; each part's extra HTTP routes (pyheadscale's additions) gathered."""

    def extra_routes(self) -> list[web.RouteDef]:
        return [route for part in PARTS for route in part.routes(self)]
