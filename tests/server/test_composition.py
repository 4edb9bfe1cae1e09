"""The composition root: a server's parts exist once it has started, and each is built from its config."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyheadscale.app import Server
from pyheadscale.config import build_config
from tests.live_server import LiveServer, StartLive


def test_parts_are_asked_for_before_start(tmp_path: Path) -> None:
    server = Server(build_config({"server_url": "http://127.0.0.1:1"}, data_dir=tmp_path))
    with pytest.raises(RuntimeError, match=r"not started: await start\(\) first"):
        _ = server.store


async def test_optional_parts_follow_the_config(start_live: StartLive) -> None:
    without = (await start_live()).server.components
    assert (without.derp, without.oidc, without.acme) == (None, None, None)
    with_relay = await start_live(derp={"server": {"enabled": True, "stun_listen_addr": "127.0.0.1:0"}})
    assert with_relay.server.components.derp is not None


async def test_the_api_answers_from_the_servers_own_parts(live: LiveServer) -> None:
    server = live.server
    context = server.components.service.context
    assert context.store is server.store
    assert context.policy is server.policy
    assert context.logins is server.logins
    assert context.ssh_checks is server.ssh_checks
