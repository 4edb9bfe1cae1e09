"""Driver (run under `unshare -n`): the golden scenario against pyheadscale, its CLI steps run by Headscale's
own `headscale` binary in remote mode over pyheadscale's gRPC API. Prints {"rest": ..., "cli": ...}."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.netns import setup_loopback_only
from tests.golden.scenario import Step, run
from tests.grpc.headscale_cli_driver import headscale, remote_env, self_signed
from tests.live_server import LiveServer
from tests.ports import free_port


async def main(binary: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="hs-remote-"))
    cert, key = self_signed(work)
    grpc_address = f"127.0.0.1:{free_port()}"
    live = await LiveServer(
        work,
        keepalive=30.0,
        # The certificate serves listen_addr too (TLS on both, as in Headscale).
        scheme="https",
        grpc_listen_addr=grpc_address,
        tls_cert_path=str(cert),
        tls_key_path=str(key),
        policy={"mode": "database"},
    ).start()
    try:
        _record, api_key = await live.store.create_api_key(datetime.now(UTC) + timedelta(hours=24))
        env = remote_env(work, grpc_address, api_key)
        base = live.url + "/api/v1"
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {api_key}"}, connector=aiohttp.TCPConnector(ssl=False)
        ) as session:

            async def call(step: Step) -> tuple[int, Any]:
                async with session.request(
                    step.method, base + step.path, params=step.params, json=step.body
                ) as resp:
                    return resp.status, await resp.json(content_type=None)

            async def run_cli(argv: tuple[str, ...]) -> str:
                return str((await headscale(binary, env, *argv))["out"])

            rest, outputs = await run(call, run_cli)
        return {"rest": rest, "cli": outputs}
    finally:
        await live.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    setup_loopback_only()
    print(json.dumps(asyncio.run(main(sys.argv[1]))), flush=True)
