"""Who may use a DERP relay of this tailnet, asked at connect time and re-decided on every node change.

A node key is admitted while it belongs to a node that may connect: registered, not expired or logged out,
and owned by a user or its tags (`Store.may_connect`). The embedded relay asks `DerpAccess.admits` as each
client logs in, and `DerpAccess.revoke_into` closes the relay connections of a key the moment it stops being
admitted (node deleted, expired, logged out, or its key rotated away). Relays run elsewhere ask
`POST /verify` (derper's `--verify-client-url`) at connect time and again periodically (our derper's
re-verification), and close what it refuses.

`/verify` body: tailcfg.DERPAdmitClientRequest `{"NodePublic", "Source"}`; answer: DERPAdmitClientResponse
`{"Allow"}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from pyheadscale.state.changes import Change, ChangeKind
from pyheadscale.state.store import Store
from pyheadscale.tailkey import InvalidKeyError, NodePublic

log = logging.getLogger(__name__)

MAX_BODY = 4096

CloseRelayClient = Callable[[NodePublic], object]
"""Closes every relay connection of a node key (DerpServer.close_client)."""


class DerpAccess:
    def __init__(self, store: Store) -> None:
        self.store = store
        # node id -> the node key last admitted for it, to know which key to cut when a node changes or goes.
        self._keys: dict[int, str] = {n.id: n.node_key for n in store.nodes.values()}

    def admits(self, node_key: NodePublic) -> bool:
        node = self.store.node_by_node_key(node_key.text)
        return node is not None and self.store.may_connect(node)

    async def admits_key(self, node_key: NodePublic) -> bool:
        """The embedded relay's verify_client callback."""
        return self.admits(node_key)

    def revoke_into(self, close: CloseRelayClient) -> Callable[[Change], None]:
        """A store subscriber calling `close` for each key that stops being admitted. O(1) per change."""

        def on_change(change: Change) -> None:
            if change.kind not in (ChangeKind.NODE_ADDED, ChangeKind.NODE_UPDATED, ChangeKind.NODE_REMOVED):
                return
            node_id = change.node_id
            assert node_id is not None
            old = self._keys.pop(node_id, None)
            node = self.store.nodes.get(node_id)
            revoked = set()
            if old is not None and (node is None or node.node_key != old):
                revoked.add(old)
            if node is not None:
                self._keys[node.id] = node.node_key
                if not self.store.may_connect(node):
                    revoked.add(node.node_key)
            for text in revoked:
                key = NodePublic.from_text(text)
                log.info("closing DERP connections of %s: node %d lost access", key.short(), node_id)
                close(key)

        return on_change


def verify_handler(access: DerpAccess) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.Response(status=413, text="request body too large\n")
        raw = await request.read()  # already read, within the listener's request deadline
        if len(raw) > MAX_BODY:
            return web.Response(status=413, text="request body too large\n")
        try:
            body = json.loads(raw or b"null")
            node_key = NodePublic.from_text(body["NodePublic"])
        except (InvalidKeyError, ValueError, TypeError, KeyError, RecursionError) as exc:
            return web.Response(status=400, text=f"invalid DERPAdmitClientRequest: {exc}\n")
        return web.json_response({"Allow": access.admits(node_key)})

    return handle
