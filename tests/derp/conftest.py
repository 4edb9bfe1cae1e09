from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from derp.server import DerpServer
from tests.derp.harness import serving


@pytest.fixture
def server() -> DerpServer:
    return DerpServer(bytes(range(32)))


@pytest.fixture
async def url(server: DerpServer) -> AsyncIterator[str]:
    async with serving(server) as derp_url:
        yield derp_url
