"""Tailscale SSH check with OIDC: the check page sends the browser to the provider, and only the person who
owns the SSH source node approves the check by logging in."""

from __future__ import annotations

from collections.abc import Callable

from tests.oidc.browser import Browser
from tests.oidc.conftest import StartSetup
from tests.oidc.test_oidc_login import Machine


async def test_owner_of_the_source_node_approves_by_logging_in(
    oidc_setup: StartSetup, new_browser: Callable[[], Browser]
) -> None:
    setup = await oidc_setup()
    live = setup.live
    machine = Machine(live, "laptop")
    try:
        await new_browser().log_in(await machine.start(), "alice")
        assert (await machine.answer())["MachineAuthorized"]
        src = live.store.node_by_machine_key(machine.client.machine_key_text)
        assert src is not None
        checks = live.server.ssh_checks

        # Someone else logging in does not approve alice's check.
        other = checks.open(src.id, 99)
        page = await new_browser().log_in(f"{live.url}/auth/{other.auth_id}", "bob")
        assert page.status == 403 and "not the owner of the SSH source node" in page.text, page.text
        assert not other.verdict.done()

        mine = checks.open(src.id, 99)
        page = await new_browser().log_in(f"{live.url}/auth/{mine.auth_id}", "alice")
        assert page.status == 200 and "SSH session authorized" in page.text, page.text
        assert mine.verdict.done() and mine.verdict.result() is True
        entries = live.server.audit.query(action="ssh.check")
        assert [e["outcome"] for e in entries][-2:] == ["denied", "approved"]
    finally:
        await machine.close()
