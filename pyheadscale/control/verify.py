"""`POST /verify`: DERP admission for relays run elsewhere (derper's `--verify-client-url`).

A standalone relay asks whether a node key may use it; the answer is yes exactly when the key belongs to a
node registered here, as with the embedded relay. Body: tailcfg.DERPAdmitClientRequest `{"NodePublic",
"Source"}`; answer: DERPAdmitClientResponse `{"Allow"}`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from pyheadscale import keys
from pyheadscale.state.store import Store

MAX_BODY = 4096


def verify_handler(store: Store) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.Response(status=413, text="request body too large\n")
        raw = await request.read()  # already read, within the listener's request deadline
        if len(raw) > MAX_BODY:
            return web.Response(status=413, text="request body too large\n")
        try:
            body = json.loads(raw or b"null")
            node_key = body["NodePublic"]
            keys.parse_key(node_key, keys.NODE_PUBLIC_PREFIX)
        except (ValueError, TypeError, KeyError) as exc:
            return web.Response(status=400, text=f"invalid DERPAdmitClientRequest: {exc}\n")
        return web.json_response({"Allow": store.node_by_node_key(node_key) is not None})

    return handle
