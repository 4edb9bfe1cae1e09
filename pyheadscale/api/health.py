"""Health: the server's health check (pyheadscale/health.py), answered as Headscale's Health rpc."""

from __future__ import annotations

from typing import Any

from pyheadscale.api.errors import ApiError, GrpcCode
from pyheadscale.api.resource import Resource
from pyheadscale.grpc.schema import pb
from pyheadscale.health import STARTING


class Health(Resource):
    async def health(self, _request: Any) -> Any:
        problem = await self.context.health.problem()
        if problem is not None:
            code = GrpcCode.FAILED_PRECONDITION if problem == STARTING else GrpcCode.INTERNAL
            raise ApiError(code, problem)
        return pb.HealthResponse(database_connectivity=True)
