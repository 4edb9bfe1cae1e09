"""OIDC login cannot be phished: after the provider identifies the person, a confirmation page names the
machine and the account, and only a POST from that page, in that browser, with that login's anti-CSRF token,
registers the machine.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.oidc.browser import Browser, confirmation_form
from tests.oidc.conftest import StartSetup
from tests.oidc.test_oidc_login import Machine


async def test_nothing_is_registered_until_the_person_confirms(
    oidc_setup: StartSetup, browser: Browser
) -> None:
    setup = await oidc_setup()
    live = setup.live
    # The attacker's machine; the victim, signed in at the provider, opens the link the attacker sent.
    machine = Machine(live, "attacker-box")
    try:
        page = await browser.log_in(await machine.start(), "alice", confirm=False)
        assert page.status == 200, page.text
        assert "Confirm the machine" in page.text
        assert "Hostname: attacker-box" in page.text and "Operating system: linux" in page.text
        assert f"Machine key: {machine.client.machine_key_text[:21]}" in page.text
        assert "Asked at: 20" in page.text
        assert "Alice Liddell &lt;alice@example.com&gt;" in page.text and "your user alice" in page.text
        assert "frame-ancestors 'none'" in page.headers.get("Content-Security-Policy", "")
        assert not live.store.nodes and not live.store.users, "nothing written before the confirmation"
        assert machine.waiting is not None and not machine.waiting.done()

        done = await browser.confirm(page)
        assert done.status == 200 and "Login successful" in done.text, done.text
        assert (await machine.answer())["MachineAuthorized"] is True
        (node,) = live.store.nodes.values()
        assert live.store.users[node.user_id or 0].email == "alice@example.com"
    finally:
        await machine.close()


async def test_the_confirmation_needs_this_browser_and_its_token(
    oidc_setup: StartSetup, browser: Browser, new_browser: Any
) -> None:
    setup = await oidc_setup()
    live = setup.live
    first, second = Machine(live, "laptop"), Machine(live, "desktop")
    try:
        page = await browser.log_in(await first.start(), "alice", confirm=False)
        other = await browser.log_in(await second.start(), "alice", confirm=False)
        form = confirmation_form(page)
        assert form is not None and set(form.fields) == {"auth_id", "csrf_token"}
        token = form.fields["csrf_token"]
        assert token != (confirmation_form(other) or form).fields["csrf_token"], "a token per login"

        attacker = new_browser()
        refusals = [
            await attacker.confirm(page),  # the right token, from another browser (no session)
            await browser.confirm(page, csrf_token="forged"),
            await browser.confirm(page, csrf_token=""),
            await browser.confirm(other, csrf_token=token),  # this login's token for another login
            await browser.confirm(page, headers={"Origin": "https://attacker.example"}),
        ]
        for refused in refusals:
            assert refused.status == 403 and "Confirmation refused" in refused.text, refused.text
        async with aiohttp.ClientSession() as http, http.get(f"{live.url}/oidc/confirm") as response:
            assert response.status == 405, "a GET never confirms"
        assert not live.store.nodes

        done = await browser.confirm(page)
        assert done.status == 200 and "Login successful" in done.text, done.text
        again = await browser.confirm(page)
        assert again.status == 403, "a confirmation works once"
        assert [n.hostname for n in live.store.nodes.values()] == ["laptop"]
        await first.answer()
    finally:
        await first.close()
        await second.close()
