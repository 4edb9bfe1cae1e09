"""`pyheadscale auth approve|reject` decide a waiting Tailscale SSH check, as Headscale's CLI does."""

from __future__ import annotations

from tests.cli.conftest import RunCli
from tests.live_server import LiveServer


async def test_auth_approve_decides_an_ssh_check(live: LiveServer, cli: RunCli) -> None:
    check = live.server.ssh_checks.open(3, 4)
    result = await cli("auth", "approve", "--auth-id", check.auth_id)
    assert result.code == 0, result.err
    assert result.out == "Auth request approved\n"  # Headscale's text, for logins and checks alike
    assert check.verdict.done() and check.verdict.result() is True
    again = await cli("auth", "approve", "--auth-id", check.auth_id)
    assert again.code != 0 and "no login is waiting" in again.err


async def test_auth_reject_turns_an_ssh_check_away(live: LiveServer, cli: RunCli) -> None:
    check = live.server.ssh_checks.open(5, 6)
    result = await cli("auth", "reject", "--auth-id", check.auth_id, "-o", "json")
    assert result.code == 0, result.err
    assert check.verdict.result() is False
