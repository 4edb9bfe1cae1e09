"""Registering a known machine again keeps its node; a single-use key it does so with is used up."""

from __future__ import annotations

import pytest

from pyheadscale.state.changes import ChangeKind
from pyheadscale.state.errors import AuthFailed
from tests.state.conftest import Tailnet


async def test_reregistration_with_a_single_use_key_uses_it_up(tailnet: Tailnet) -> None:
    store = tailnet.store
    node = await tailnet.node("laptop")  # registered without a key (as an interactive login does)
    key, text = await store.create_preauth_key(node.user_id)
    assert not key.used
    tailnet.seen.clear()
    again = await store.register_with_key(
        store.find_preauth_key(text),
        machine_key=node.machine_key,
        node_key="nodekey:laptop-2",
        hostinfo={"Hostname": "laptop"},
        expiry=None,
    )
    assert again.id == node.id and again.node_key == "nodekey:laptop-2"
    assert store.preauth_keys[key.id].used
    assert [c.kind for c in tailnet.seen][:1] == [ChangeKind.NODE_UPDATED]
    with pytest.raises(AuthFailed, match="already used"):
        store.find_preauth_key(text)
