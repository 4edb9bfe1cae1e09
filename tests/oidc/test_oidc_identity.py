"""An OIDC user cannot borrow another user's policy identity: what a person chooses at the identity provider
(preferred_username) never makes them another user's name or address, and a token that comes to match two
users grants nothing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pyheadscale.policy import PolicyError
from pyheadscale.state.errors import Conflict
from tests.oidc.browser import Browser
from tests.oidc.conftest import StartSetup
from tests.oidc.test_oidc_login import Machine

ALICE_ONLY = {
    "acls": [
        {"action": "accept", "src": ["alice@example.com"], "dst": ["alice@example.com:*"]},
        {"action": "accept", "src": ["alice@"], "dst": ["alice@:*"]},
    ]
}


async def log_in(setup: Any, new_browser: Any, hostname: str, account: str) -> Any:
    machine = Machine(setup.live, hostname)
    page = await new_browser().log_in(await machine.start(), account)
    assert page.status == 200, page.text
    await machine.answer()
    await machine.close()
    node = setup.live.store.node_by_machine_key(machine.client.machine_key_text)
    assert node is not None
    return node


async def test_a_chosen_name_never_borrows_an_identity(oidc_setup: StartSetup, new_browser: Any) -> None:
    setup = await oidc_setup(policy={"mode": "database"})
    live, provider = setup.live, setup.provider
    alice_node = await log_in(setup, new_browser, "alice-laptop", "alice")

    # Bob says he is alice@example.com at the provider (his verified address is bob@other.org).
    await provider.set_claims("bob", preferred_username="alice@example.com")
    bob_node = await log_in(setup, new_browser, "bob-laptop", "bob")
    bob = live.store.users[bob_node.user_id]
    assert bob.name == "bob@other.org", "not someone else's address as a name"
    # Then he says he is alice: that name is held, so he keeps his own.
    await provider.set_claims("bob", preferred_username="alice")
    third = await log_in(setup, new_browser, "bob-desktop", "bob")
    assert third.user_id == bob.id
    assert live.store.users[bob.id].name == "bob@other.org"
    assert len({u.name for u in live.store.users.values()}) == len(live.store.users)

    policy = live.server.policy
    assert policy is not None
    await policy.set_policy(json.dumps(ALICE_ONLY))
    assert policy.peers(alice_node.id) == {}, "no node of bob's is reachable as alice"
    assert policy.peers(bob_node.id) == {}
    alice_sources = {s for rule in policy.filter_rules(alice_node.id) for s in rule.get("SrcIPs", [])}
    assert alice_sources and all(str(bob_node.ipv4) not in s for s in alice_sources)


async def test_a_user_change_that_makes_a_token_ambiguous_fails_closed(
    oidc_setup: StartSetup, new_browser: Any
) -> None:
    setup = await oidc_setup(policy={"mode": "database"})
    live = setup.live
    alice_node = await log_in(setup, new_browser, "alice-laptop", "alice")
    policy = live.server.policy
    assert policy is not None
    grant = {"acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["*:*"]}]}
    await policy.set_policy(json.dumps(grant))
    assert policy.filter_rules(alice_node.id)

    # An operator gives another user the same address: the token now names two users.
    await live.store.create_user("alice2", "", "alice@example.com")
    assert policy.filter_rules(alice_node.id) == [], "an ambiguous token grants nothing"
    (reported,) = live.server.audit.query(action="policy.ambiguous")
    assert reported["token"] == "alice@example.com"
    with pytest.raises(PolicyError, match="multiple users found"):
        await policy.set_policy(json.dumps(grant))

    # The provider's alice logging in again does not take the address over either.
    await log_in(setup, new_browser, "alice-desktop", "alice")
    assert policy.filter_rules(alice_node.id) == []


async def test_oidc_never_takes_a_name_another_user_holds(oidc_setup: StartSetup, new_browser: Any) -> None:
    setup = await oidc_setup()
    store = setup.live.store
    operator_carol = await store.create_user("carol")
    # Carol's provider account prefers "carol", and her address is unverified: the next name is made up.
    node = await log_in(setup, new_browser, "carol-laptop", "carol")
    oidc_carol = store.users[node.user_id]
    assert oidc_carol.id != operator_carol.id and oidc_carol.name == "oidc-carol"
    assert oidc_carol.email == "", "an unverified address is not stored"
    with pytest.raises(Conflict):
        await store.create_user("carol", provider="oidc", provider_id="https://elsewhere/carol")
    with pytest.raises(Conflict):
        await store.update_user_profile(
            oidc_carol.id, name="carol", display_name="", email="", profile_pic_url=""
        )


async def test_when_every_name_is_taken_the_login_says_so(oidc_setup: StartSetup, browser: Browser) -> None:
    setup = await oidc_setup()
    store = setup.live.store
    for name in ["carol", "oidc-carol", *(f"oidc-carol-{n}" for n in range(2, 10))]:
        await store.create_user(name)
    machine = Machine(setup.live, "laptop")
    try:
        page = await browser.log_in(await machine.start(), "carol", confirm=False)
        assert page.status == 500 and "every user name for" in page.text, page.text
        assert not store.nodes and len(store.users) == 10
    finally:
        await machine.close()
