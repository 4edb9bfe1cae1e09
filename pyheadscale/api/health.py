"""Health: whether the server can reach its database."""

from __future__ import annotations

from typing import Any

from pyheadscale.api.errors import ApiError, GrpcCode
from pyheadscale.api.resource import Resource
from pyheadscale.grpc.schema import pb


class Health(Resource):
    async def health(self, _request: Any) -> Any:
        db = self.server.db
        if db is None or not await db.ping():
            raise ApiError(GrpcCode.INTERNAL, "pinging database: unreachable")
        return pb.HealthResponse(database_connectivity=True)
