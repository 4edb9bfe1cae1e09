"""One health check behind `GET /health` (Headscale's probe) and the Health rpc: both see the database go."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from sqlalchemy.ext.asyncio import create_async_engine

from pyheadscale.health import DATABASE_UNREACHABLE, STARTING, HealthCheck
from tests.api.conftest import Api
from tests.live_server import LiveServer


@contextlib.asynccontextmanager
async def database_unreachable(live: LiveServer, nowhere: Path) -> AsyncIterator[None]:
    """The server's database engine pointed at a file in a directory that does not exist, then put back."""
    database = live.server.components.db
    working = database.engine
    database.engine = create_async_engine(f"sqlite+aiosqlite:///{nowhere / 'missing' / 'db.sqlite'}")
    try:
        yield
    finally:
        await database.engine.dispose()
        database.engine = working


async def _probe(live: LiveServer) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(f"{live.url}/health") as response:
        return response.status, await response.json()


async def test_both_endpoints_pass_while_the_database_answers(live: LiveServer, api: Api) -> None:
    assert await _probe(live) == (200, {"status": "pass"})
    assert await api.get("/health") == (200, {"databaseConnectivity": True})


async def test_both_endpoints_fail_when_the_database_is_unreachable(
    live: LiveServer, api: Api, tmp_path: Path
) -> None:
    async with database_unreachable(live, tmp_path):
        assert await _probe(live) == (500, {"status": "fail"})
        status, body = await api.get("/health")
        assert (status, body["code"], body["message"]) == (500, 13, DATABASE_UNREACHABLE)
    assert await _probe(live) == (200, {"status": "pass"})


async def test_starting_until_ready(live: LiveServer) -> None:
    ready = asyncio.Event()
    check = HealthCheck(live.server.components.db, ready)
    assert await check.problem() == STARTING
    ready.set()
    assert await check.problem() is None
