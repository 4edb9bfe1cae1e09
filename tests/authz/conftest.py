"""Authorization tests run on the shared live server (tests/live_server.py: our TS2021 client, the API's unix
socket and TCP listener) and the CLI runner. This module re-exports the API and CLI fixtures and adds helpers
the revocation tests share."""

from __future__ import annotations

import asyncio
from typing import Any

from derp import frames
from pyheadscale.tailcfg.frame import decode_frames
from tests.api.conftest import api, tcp  # noqa: F401  (fixtures)
from tests.cli.conftest import cli, config_file  # noqa: F401  (fixtures)
from tests.live_server import ClientNode
from tests.ports import free_port

SLOW = 20.0
"""The bound on any one wait in these tests: generous, as CI machines are shared and slow."""

REFUSED = (ConnectionError, frames.ProtocolError, EOFError, asyncio.IncompleteReadError)
"""How a DERP login the relay refuses ends, as the client sees it."""


def decode_messages(data: bytes) -> list[dict[str, Any]]:
    """The MapResponses of an uncompressed map response body (`map_request` asks for no compression)."""
    return decode_frames(data, compressed=False)


async def map_request(node: ClientNode, **fields: Any) -> tuple[int, bytes]:
    """One MapRequest from `node` (not streaming unless `Stream` is given): (status, body)."""
    body: dict[str, Any] = {
        "Version": node.client.capver,
        "NodeKey": node.node_key_text,
        "DiscoKey": "discokey:" + "22" * 32,
        "Compress": "",
    } | fields
    return await node.client.request("POST", "/machine/map", body)


def derp_config(stun_port: int | None = None) -> dict[str, Any]:
    """The embedded relay, verifying clients, with STUN on a free loopback port."""
    port = stun_port or free_port()
    return {"server": {"enabled": True, "verify_clients": True, "stun_listen_addr": f"127.0.0.1:{port}"}}
