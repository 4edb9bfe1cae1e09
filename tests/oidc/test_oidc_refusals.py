"""What the callback refuses: unknown, replayed or foreign states, ID tokens for another nonce, and what
happens when the provider is down. Every refusal leaves the machine unregistered.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest

from pyheadscale.auth.oidc_provider import ProviderError
from tests.live_server import LiveServer, StartLive
from tests.oidc.browser import Browser
from tests.oidc.conftest import CLIENT_SECRET, StartSetup
from tests.oidc.test_oidc_login import Machine
from tests.ports import free_port


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_unknown_state_and_missing_parameters(oidc_setup: StartSetup, browser: Browser) -> None:
    setup = await oidc_setup()
    callback = f"{setup.live.url}/oidc/callback"
    for url in (callback, f"{callback}?code=abc", f"{callback}?state=forged-state-value&code=abc"):
        page = await browser.get(url)
        assert page.status == 400, url
        assert "Unknown login" in page.text and "already used" in page.text


async def test_replayed_callback_is_refused(
    oidc_setup: StartSetup, browser: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    setup = await oidc_setup()
    machine = Machine(setup.live, "laptop")
    try:
        page = await browser.log_in(await machine.start(), "alice")
        assert page.status == 200, page.text
        callback = next(u for u in page.trail if u.startswith(f"{setup.live.url}/oidc/callback?"))
        await machine.answer()

        replay = await browser.get(callback)
        assert replay.status == 400 and "already used" in replay.text
        assert len(setup.live.store.nodes) == 1

        code = dict(parse_qsl(urlsplit(callback).query))["code"]
        audit_text = json.dumps(list(setup.live.server.audit.entries))
        for secret in (code, CLIENT_SECRET):
            assert secret not in caplog.text and secret not in audit_text, "never logged"
    finally:
        await machine.close()


async def test_callback_in_another_browser_is_refused(oidc_setup: StartSetup, new_browser: Any) -> None:
    """Login CSRF: a callback with someone else's state, opened in a browser that did not start the login."""
    setup = await oidc_setup()
    machine = Machine(setup.live, "laptop")
    starter, victim = new_browser(), new_browser()
    try:
        provider_url = await starter.first_redirect(await machine.start())
        assert provider_url.startswith(setup.provider.issuer)
        page = await victim.log_in(provider_url, "alice")
        assert page.status == 403, page.text
        assert "does not belong to a login started in this browser" in page.text
        assert not setup.live.store.nodes and not setup.live.store.users
    finally:
        await machine.close()


async def test_id_token_for_another_nonce_is_refused(oidc_setup: StartSetup, browser: Browser) -> None:
    """The provider issues a token for whatever nonce the request carried; a substituted one must not pass."""
    setup = await oidc_setup()
    machine = Machine(setup.live, "laptop")
    try:
        provider_url = await browser.first_redirect(await machine.start())
        assert dict(parse_qsl(urlsplit(provider_url).query))["code_challenge_method"] == "S256"
        page = await browser.log_in(with_query(provider_url, nonce="attacker-chosen-nonce"), "alice")
        assert page.status == 403, page.text
        assert "nonce does not match this login" in page.text
        assert not setup.live.store.nodes and not setup.live.store.users
        (denied,) = setup.live.server.audit.query(action="node.register")
        assert denied["outcome"] == "denied"
        assert "nonce" in denied["reason"]
    finally:
        await machine.close()


async def test_code_without_the_pkce_verifier_is_refused_by_the_provider(
    oidc_setup: StartSetup, browser: Browser
) -> None:
    """A code obtained with another PKCE challenge cannot be redeemed with this login's verifier."""
    setup = await oidc_setup()
    machine = Machine(setup.live, "laptop")
    try:
        provider_url = await browser.first_redirect(await machine.start())
        forged = with_query(provider_url, code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
        page = await browser.log_in(forged, "alice")
        assert page.status == 502, page.text
        assert "the provider refused the login code" in page.text
        assert not setup.live.store.nodes
    finally:
        await machine.close()


async def test_login_cancelled_at_the_provider(oidc_setup: StartSetup, browser: Browser) -> None:
    setup = await oidc_setup()
    machine = Machine(setup.live, "laptop")
    try:
        page = await browser.get(await machine.start())
        assert "/interaction/" in page.url
        cancelled = await browser.get(page.url.rstrip("/") + "/abort")
        assert cancelled.status == 403 and "did not log you in" in cancelled.text
        assert not setup.live.store.nodes
        assert setup.live.server.logins.get(machine.auth_id) is not None
    finally:
        await machine.close()


async def test_unreachable_provider(start_live: StartLive) -> None:
    dead = {"issuer": f"http://127.0.0.1:{free_port()}", "client_id": "c", "client_secret": "s"}
    with pytest.raises(ProviderError, match="only_start_if_oidc_is_available"):
        await start_live(oidc=dead)

    live = await start_live(oidc=dead | {"only_start_if_oidc_is_available": False})
    login = live.server.logins.start("mkey:" + "0" * 64, "nodekey:" + "1" * 64, {"Hostname": "laptop"})
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{live.url}/register/{login.auth_id}", allow_redirects=False) as response,
    ):
        assert response.status == 503
        assert "Identity provider unavailable" in await response.text()


async def test_register_page_without_oidc_still_shows_the_command(live: LiveServer) -> None:
    server = live.server
    assert server.oidc is None
    login = server.logins.start("mkey:" + "0" * 64, "nodekey:" + "1" * 64, {"Hostname": "laptop"})
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{live.url}/register/{login.auth_id}", allow_redirects=False) as response,
    ):
        assert response.status == 200
        assert f"pyheadscale auth register --auth-id {login.auth_id}" in await response.text()
    callback = f"{live.url}/oidc/callback"
    async with aiohttp.ClientSession() as http, http.get(callback) as response:
        assert response.status == 404
