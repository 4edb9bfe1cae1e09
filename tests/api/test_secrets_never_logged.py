"""Refused API keys are audited and counted; no log line of any kind ever holds a key's secret."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from pyheadscale.client.control import ControlClient
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.api.conftest import Api
from tests.live_server import LiveServer


async def test_wrong_and_expired_api_keys_get_401_and_an_audit_entry(live: LiveServer) -> None:
    good, good_text = await live.store.create_api_key(datetime.now(UTC) + timedelta(days=1))
    stale, stale_text = await live.store.create_api_key(datetime.now(UTC) + timedelta(days=1))
    await live.store.expire_api_key(stale.id)
    async with aiohttp.ClientSession() as session:
        for token, prefix in (
            (good_text[:-4] + "0000", good.prefix),
            (stale_text, stale.prefix),
            ("junk", None),
        ):
            api = Api(session, live.url + "/api/v1", {"Authorization": f"Bearer {token}"})
            status, body = await api.get("/user")
            assert status == 401 and body["code"] == 16, body
            entry = live.server.audit.query(action="api.authenticate")[-1]
            assert (entry["outcome"], entry["target"]) == ("denied", "api:GET /api/v1/user")
            assert entry.get("key_prefix") == prefix
            assert entry["actor"].startswith("remote:")
        status, _ = await Api(session, live.url + "/api/v1").get("/user")
        assert status == 401
    assert len(live.server.audit.query(action="api.authenticate")) == 4
    assert live.server.metrics.auth_failures.labels("apikey")._value.get() == 4


async def test_no_log_line_holds_a_secret(live: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    user = await live.store.create_user("alice")
    _, preauth_text = await live.store.create_preauth_key(user.id, reusable=True)
    _, api_text = await live.store.create_api_key(None)
    client = ControlClient(live.url, MachinePrivate.generate())
    await client.connect()
    try:
        await client.register(NodePrivate.generate(), auth_key=preauth_text[:-1] + "f")  # refused
        await client.register(NodePrivate.generate(), auth_key=preauth_text)
    finally:
        await client.close()
    async with aiohttp.ClientSession() as session:
        for token in (api_text, api_text[:-1] + "0"):
            await Api(session, live.url + "/api/v1", {"Authorization": f"Bearer {token}"}).get("/node")
    await live.server.audit.close()
    audit_file = (live.server.config.path(live.server.config.audit_log)).read_text()
    for text in (preauth_text, api_text):
        secret = text.rsplit("-", 1)[1]
        assert secret[:16] not in caplog.text, "a secret reached the server log"
        assert secret[:16] not in audit_file, "a secret reached the audit log"
    noise_key = live.server.config.path(live.server.config.noise.private_key_path).read_text().strip()
    assert noise_key.split(":")[1][:16] not in caplog.text + audit_file
