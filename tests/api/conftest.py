"""Fixtures: HTTP clients for the live server's unix socket (trusted) and its TCP listener (API key)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.live_server import LiveServer


class Api:
    """A thin JSON client: every call returns (HTTP status, decoded JSON body)."""

    def __init__(
        self, session: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None
    ) -> None:
        self.session = session
        self.base = base
        self.headers = headers or {}

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: str | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        async with self.session.request(
            method,
            self.base + path,
            json=json,
            data=data,
            params=params,
            headers={**self.headers, **(headers or {})},
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def get(self, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        return await self.call("POST", path, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        return await self.call("DELETE", path, **kw)


@pytest.fixture
async def api(live: LiveServer) -> AsyncIterator[Api]:
    """The trusted API over the unix socket, as the local CLI uses it."""
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=live.socket_path)) as session:
        yield Api(session, "http://localhost/api/v1")


@pytest.fixture
async def tcp(live: LiveServer) -> AsyncIterator[Api]:
    """The API over the network listener, with no credentials (tests add the header)."""
    async with aiohttp.ClientSession() as session:
        yield Api(session, live.url + "/api/v1")
