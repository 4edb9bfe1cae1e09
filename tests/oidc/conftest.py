"""A real OpenID provider (panva's certified `oidc-provider`, run by Node.js) and a pyheadscale server using
it.

The provider's npm package is installed once per session into tests/oidc/provider (`npm install`); the
provider itself runs per test, on an ephemeral 127.0.0.1 port, with the test server's callback as its client's
redirect URI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.live_server import LiveServer, StartLive
from tests.oidc.browser import Browser
from tests.ports import free_port

PROVIDER_DIR = Path(__file__).parent / "provider"
CLIENT_ID = "pyheadscale-test"
CLIENT_SECRET = "test-client-secret-9f4c1e"


def install_provider() -> Path:
    """tests/oidc/provider with its node_modules; skips (saying why) only when Node.js or npm is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("OIDC tests need Node.js and npm (to run the oidc-provider test provider); not installed")
    pinned = json.loads((PROVIDER_DIR / "package.json").read_text())["dependencies"]["oidc-provider"]
    installed = PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != pinned:
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"],
            cwd=PROVIDER_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"npm install in {PROVIDER_DIR} failed:\n{result.stderr}"
    return PROVIDER_DIR


@pytest.fixture(scope="session")
def provider_installed() -> Path:
    return install_provider()


@dataclass
class OIDCProvider:
    issuer: str
    process: asyncio.subprocess.Process

    async def set_claims(self, account: str, **claims: Any) -> None:
        """Change what the provider says about an account from now on."""
        async with (
            aiohttp.ClientSession() as http,
            http.put(f"{self.issuer}/_test/accounts/{account}", json=claims) as response,
        ):
            assert response.status == 204, await response.text()


async def start_provider(directory: Path, redirect_uri: str, log_path: Path) -> OIDCProvider:
    options = {"redirect_uri": redirect_uri, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    log = await asyncio.to_thread(log_path.open, "ab")
    with log:
        process = await asyncio.create_subprocess_exec(
            "node",
            "server.js",
            json.dumps(options),
            cwd=directory,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
        )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    if not line:
        await process.wait()
        output = await asyncio.to_thread(log_path.read_text)
        pytest.fail(f"the OIDC test provider exited ({process.returncode}):\n{output}")
    return OIDCProvider(json.loads(line)["issuer"], process)


async def stop_provider(provider: OIDCProvider) -> None:
    if provider.process.returncode is None:
        provider.process.terminate()
        with contextlib.suppress(ProcessLookupError):
            await provider.process.wait()


@dataclass
class OIDCSetup:
    live: LiveServer
    provider: OIDCProvider


StartSetup = Callable[..., Awaitable[OIDCSetup]]


@pytest.fixture
async def oidc_setup(
    provider_installed: Path, tmp_path: Path, start_live: StartLive
) -> AsyncIterator[StartSetup]:
    """Start the provider and a pyheadscale server whose `oidc` section is the base one plus `oidc`."""
    providers: list[OIDCProvider] = []

    async def start(oidc: dict[str, Any] | None = None, **top: Any) -> OIDCSetup:
        port = free_port()
        provider = await start_provider(
            provider_installed, f"http://127.0.0.1:{port}/oidc/callback", tmp_path / "provider.log"
        )
        providers.append(provider)
        section = {
            "issuer": provider.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scope": ["openid", "profile", "email", "groups"],
            # The test provider requires PKCE; Headscale (and so pyheadscale) leaves it off by default.
            "pkce": {"enabled": True},
            **(oidc or {}),
        }
        live = await start_live(
            data_dir=tmp_path / f"data{len(providers) - 1}", port=port, **top, oidc=section
        )
        return OIDCSetup(live, provider)

    try:
        yield start
    finally:
        for provider in providers:
            await stop_provider(provider)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    b = Browser()
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def new_browser() -> AsyncIterator[Callable[[], Browser]]:
    """More browsers (other people, or the same person elsewhere), closed at the end."""
    made: list[Browser] = []

    def make() -> Browser:
        made.append(Browser())
        return made[-1]

    try:
        yield make
    finally:
        for b in made:
            await b.close()
