"""Logins in flight at the provider cannot be evicted by anyone else: a browser reloading its link reuses its
session, a login takes a bounded number of browsers, and nothing one client does pushes out another's session.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest

from pyheadscale.auth.oidc_sessions import (
    MAX_BROWSERS_PER_LOGIN,
    LoginSessions,
    TooManyBrowsers,
    new_browser_id,
)
from tests.oidc.browser import Browser
from tests.oidc.conftest import StartSetup
from tests.oidc.test_oidc_login import Machine


def state_of(provider_url: str) -> str:
    return dict(parse_qsl(urlsplit(provider_url).query))["state"]


def test_no_flood_displaces_another_login() -> None:
    ended: set[str] = set()
    sessions = LoginSessions(lambda auth_id: auth_id not in ended)
    victim = sessions.begin("victim-login", new_browser_id())

    attacker = new_browser_id()
    reloads = {sessions.begin("attacker-login", attacker).state for _ in range(10_000)}
    assert len(reloads) == 1, "one browser reloading its link keeps one session"
    refused = 0
    for _ in range(10_000):
        try:
            sessions.begin("attacker-login", new_browser_id())
        except TooManyBrowsers:
            refused += 1
    assert refused == 10_000 - (MAX_BROWSERS_PER_LOGIN - 1)
    assert sessions.by_state(victim.state) is victim, "the victim's login is still in flight"
    assert len(sessions) == 1 + MAX_BROWSERS_PER_LOGIN

    # Sessions of logins that ended are swept, so finished logins cannot pile up either.
    for n in range(5_000):
        sessions.begin(f"finished-{n}", new_browser_id())
        ended.add(f"finished-{n}")
    assert len(sessions) < 2_100
    assert sessions.by_state(victim.state) is victim


def test_a_used_state_is_renewed_in_place() -> None:
    sessions = LoginSessions(lambda auth_id: True)
    browser = new_browser_id()
    first = sessions.begin("login", browser)
    sessions.use_state(first)
    assert sessions.by_state(first.state) is None, "a state works once"
    second = sessions.begin("login", browser)
    assert second.state != first.state and len(sessions) == 1


async def test_reloading_a_link_reuses_the_session_and_others_finish(
    oidc_setup: StartSetup, browser: Browser, new_browser: Any
) -> None:
    setup = await oidc_setup()
    live = setup.live
    assert live.server.oidc is not None
    victim_machine, attacker_machine = Machine(live, "victim"), Machine(live, "attacker")
    try:
        victim_url = await browser.first_redirect(await victim_machine.start())
        attacker_link = await attacker_machine.start()
        attacker = new_browser()
        states = {state_of(await attacker.first_redirect(attacker_link)) for _ in range(200)}
        assert len(states) == 1, "repeated visits from one browser reuse its session"

        statuses = []
        for _ in range(MAX_BROWSERS_PER_LOGIN + 3):
            async with (
                aiohttp.ClientSession() as fresh,
                fresh.get(attacker_link, allow_redirects=False) as response,
            ):
                statuses.append(response.status)
        assert statuses.count(302) == MAX_BROWSERS_PER_LOGIN - 1 and statuses.count(429) == 4, statuses
        assert len(live.server.oidc.sessions) == 1 + MAX_BROWSERS_PER_LOGIN

        page = await browser.log_in(victim_url, "alice")
        assert page.status == 200 and "Login successful" in page.text, page.text
        assert (await victim_machine.answer())["MachineAuthorized"] is True
    finally:
        await victim_machine.close()
        await attacker_machine.close()


@pytest.mark.parametrize("cookie", ["", "short", "x" * 43 + "!", "a" * 4000])
async def test_a_foreign_browser_cookie_is_replaced(oidc_setup: StartSetup, cookie: str) -> None:
    setup = await oidc_setup()
    machine = Machine(setup.live, "laptop")
    try:
        link = await machine.start()
        async with (
            aiohttp.ClientSession(cookies={"pyhs_oidc_browser": cookie}) as http,
            http.get(link, allow_redirects=False) as response,
        ):
            assert response.status == 302
            issued = response.cookies["pyhs_oidc_browser"].value
            assert issued != cookie and len(issued) == 43
    finally:
        await machine.close()
