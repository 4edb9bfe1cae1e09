"""Tags asked for at an interactive login are checked by the check the login list was built with."""

from __future__ import annotations

from typing import Any

import pytest

from pyheadscale.auth.interactive import PendingLogins, TagsRefused
from pyheadscale.state.models import User

MACHINE = "mkey:" + "2" * 64
NODE = "nodekey:" + "3" * 64
HOSTINFO = {"Hostname": "laptop", "RequestTags": ["tag:server", "tag:web"]}
NO_STORE: Any = object()
"""Refusals happen before anything is registered: any use of the store here fails the test."""


async def test_without_a_tag_owner_check_every_requested_tag_is_refused() -> None:
    """Was an AttributeError: the attribute was only ever set by the server, after construction."""
    logins = PendingLogins()
    login = logins.start(MACHINE, NODE, HOSTINFO)
    with pytest.raises(TagsRefused, match=r"tag:server.*tag:web"):
        await logins.approve(NO_STORE, login, User(id=1, name="alice"), None, method="cli")
    assert logins.get(login.auth_id) is None


async def test_the_check_given_at_construction_names_the_tags_refused() -> None:
    asked: list[tuple[int, list[str]]] = []

    def not_owned(user_id: int, tags: list[str]) -> list[str]:
        asked.append((user_id, tags))
        return [tag for tag in tags if tag != "tag:web"]

    logins = PendingLogins(tags_not_owned=not_owned)
    login = logins.start(MACHINE, NODE, HOSTINFO)
    with pytest.raises(TagsRefused, match="tag:server") as refused:
        await logins.approve(NO_STORE, login, User(id=7, name="bob"), None, method="cli")
    assert "tag:web" not in str(refused.value)
    assert asked == [(7, ["tag:server", "tag:web"])]
