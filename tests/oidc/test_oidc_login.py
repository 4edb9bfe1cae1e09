"""OIDC login end to end against a real provider: a keyless client's AuthURL leads through the provider's
sign-in and consent pages, and the callback registers the waiting machine to the user the provider vouched
for.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pyheadscale.client.control import ControlClient
from pyheadscale.state.names import now
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.live_server import LiveServer
from tests.oidc.browser import Browser
from tests.oidc.conftest import StartSetup


class Machine:
    """A machine logging in without a key: gets an AuthURL, then waits on its follow-up."""

    def __init__(self, live: LiveServer, hostname: str) -> None:
        self.live = live
        self.hostname = hostname
        self.client = ControlClient(live.url, MachinePrivate.generate())
        self.node_key = NodePrivate.generate()
        self.auth_url = ""
        self.waiting: asyncio.Future[dict[str, Any]] | None = None

    async def start(self) -> str:
        await self.client.connect()
        first = await self.client.register(self.node_key, hostname=self.hostname)
        assert not first["MachineAuthorized"]
        assert first["AuthURL"].startswith(f"{self.live.url}/register/hskey-authreq-"), first
        self.auth_url = first["AuthURL"]
        self.waiting = asyncio.ensure_future(
            self.client.register(self.node_key, hostname=self.hostname, followup=self.auth_url)
        )
        return self.auth_url

    @property
    def auth_id(self) -> str:
        return self.auth_url.rsplit("/", 1)[1]

    async def answer(self) -> dict[str, Any]:
        assert self.waiting is not None
        return await asyncio.wait_for(self.waiting, 10)

    async def close(self) -> None:
        if self.waiting is not None:
            self.waiting.cancel()
        await self.client.close()


async def test_allowed_user_logs_in_and_the_waiting_client_proceeds(
    oidc_setup: StartSetup, browser: Browser
) -> None:
    setup = await oidc_setup({"allowed_domains": ["example.com"]})
    live = setup.live
    machine = Machine(live, "laptop")
    try:
        auth_url = await machine.start()
        page = await browser.log_in(auth_url, "alice")
        assert page.status == 200, page.text
        assert "Login successful" in page.text and "laptop" in page.text
        assert any(url.startswith(setup.provider.issuer + "/interaction/") for url in page.trail), (
            "the browser went through the provider's own sign-in page"
        )

        answer = await machine.answer()
        assert answer["MachineAuthorized"] is True
        assert answer["Login"]["LoginName"] == "alice@example.com"
        assert answer["Login"]["DisplayName"] == "Alice Liddell"
        assert answer["Login"]["Provider"] == "oidc"

        node = live.store.node_by_machine_key(machine.client.machine_key_text)
        assert node is not None and node.register_method == "oidc" and node.expiry is None
        user = live.store.users[node.user_id or 0]
        assert (user.name, user.email, user.display_name) == ("alice", "alice@example.com", "Alice Liddell")
        assert user.profile_pic_url == "https://pictures.example.com/alice.png"
        assert (user.provider, user.provider_id) == ("oidc", f"{setup.provider.issuer}/alice")

        stream = machine.client.map_stream(machine.node_key, hostname="laptop")
        first = await asyncio.wait_for(stream.__anext__(), 10)
        assert first["Node"]["ID"] == node.id
        profiles = {p["ID"]: p for p in first.get("UserProfiles", [])}
        assert profiles[user.id]["ProfilePicURL"] == "https://pictures.example.com/alice.png"
    finally:
        await machine.close()


async def test_second_login_matches_the_user_and_refreshes_the_profile(
    oidc_setup: StartSetup, browser: Browser
) -> None:
    setup = await oidc_setup()
    live = setup.live
    first, second = Machine(live, "laptop"), Machine(live, "desktop")
    try:
        page = await browser.log_in(await first.start(), "alice")
        assert page.status == 200, page.text
        await first.answer()
        (user,) = live.store.users.values()

        await setup.provider.set_claims(
            "alice",
            name="Alice Pleasance",
            preferred_username="alice.l",
            picture="https://pictures.example.com/alice-2.png",
        )
        # The same browser: the provider remembers the person (no sign-in page); the claims are read afresh.
        page = await browser.log_in(await second.start(), "alice")
        assert page.status == 200, page.text
        answer = await second.answer()
        assert answer["Login"]["DisplayName"] == "Alice Pleasance"

        (again,) = live.store.users.values()
        assert again.id == user.id, "matched on issuer and subject, not on the name"
        assert (again.name, again.display_name) == ("alice.l", "Alice Pleasance")
        assert again.profile_pic_url == "https://pictures.example.com/alice-2.png"
        nodes = [n for n in live.store.nodes.values() if n.user_id == user.id]
        assert sorted(n.given_name for n in nodes) == ["desktop", "laptop"]
        updates = live.server.audit.query(action="user.update")
        assert updates and updates[-1]["display_name"] == "Alice Pleasance"
    finally:
        await first.close()
        await second.close()


async def test_user_outside_allowed_domains_is_refused(
    oidc_setup: StartSetup, browser: Browser, new_browser: Any
) -> None:
    setup = await oidc_setup({"allowed_domains": ["example.com"]})
    live = setup.live
    machine = Machine(live, "laptop")
    try:
        auth_url = await machine.start()
        page = await browser.log_in(auth_url, "bob")
        assert page.status == 403
        assert "Login refused" in page.text
        assert "the email domain of bob@other.org is not allowed to log in" in page.text
        assert not live.store.nodes, "no node for a refused login"
        assert not live.store.users, "no user for a refused login"
        assert live.server.logins.get(machine.auth_id) is not None, "it may still log in as someone else"
        (denied,) = [e for e in live.server.audit.query(action="node.register") if e["outcome"] == "denied"]
        assert denied["method"] == "oidc" and denied["email"] == "bob@other.org"
        assert "not allowed" in denied["reason"]

        # The same link, another (allowed) person in another browser: the waiting machine gets in.
        page = await new_browser().log_in(auth_url, "alice")
        assert page.status == 200, page.text
        assert (await machine.answer())["Login"]["LoginName"] == "alice@example.com"
    finally:
        await machine.close()


async def test_groups_and_unverified_email_rules(oidc_setup: StartSetup, new_browser: Any) -> None:
    setup = await oidc_setup({"allowed_groups": ["engineering"], "allowed_domains": ["example.com"]})
    live = setup.live
    machine = Machine(live, "laptop")
    try:
        auth_url = await machine.start()
        dave = await new_browser().log_in(auth_url, "dave")
        assert dave.status == 403 and "not a member of any group allowed to log in" in dave.text
        carol = await new_browser().log_in(auth_url, "carol")
        assert carol.status == 403 and "has not verified your email address" in carol.text
        assert not live.store.nodes
        entries = live.server.audit.query(action="node.register")
        assert [e["outcome"] for e in entries] == ["denied", "denied"]
    finally:
        await machine.close()


async def test_unverified_email_allowed_when_not_required(oidc_setup: StartSetup, browser: Browser) -> None:
    setup = await oidc_setup({"email_verified_required": False, "allowed_users": ["carol@example.com"]})
    machine = Machine(setup.live, "laptop")
    try:
        page = await browser.log_in(await machine.start(), "carol")
        assert page.status == 200, page.text
        await machine.answer()
        (user,) = setup.live.store.users.values()
        assert user.email == "carol@example.com"
    finally:
        await machine.close()


async def test_node_expiry_from_token_or_config(oidc_setup: StartSetup, new_browser: Any) -> None:
    from_token = await oidc_setup({"use_expiry_from_token": True})
    from_config = await oidc_setup(node={"expiry": "2h"})
    # ID tokens live an hour here; node.expiry says two hours (oidc.expiry is refused, as in Headscale).
    cases = (
        (from_token, timedelta(hours=1)),
        (from_config, timedelta(hours=2)),
    )
    for setup, lifetime in cases:
        machine = Machine(setup.live, "laptop")
        try:
            before = now()
            page = await new_browser().log_in(await machine.start(), "alice")
            assert page.status == 200, page.text
            await machine.answer()
            (node,) = setup.live.store.nodes.values()
            assert node.expiry is not None
            assert before + lifetime - timedelta(minutes=2) <= node.expiry <= now() + lifetime
        finally:
            await machine.close()
