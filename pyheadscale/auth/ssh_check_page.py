"""The page an SSH check message points at (`/auth/<auth id>`): what the operator runs to approve it."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable

from aiohttp import web

from pyheadscale.auth.oidc_login import OIDCLogin
from pyheadscale.auth.operator_page import operator_page
from pyheadscale.control.ssh_action import SSHChecks
from pyheadscale.state.store import Store

_COMMANDS = """<code>pyheadscale auth approve --auth-id {auth_id}</code>
<p>or, to turn it away:</p>
<code>pyheadscale auth reject --auth-id {auth_id}</code>
<p>The waiting SSH connection goes on as soon as the command has run.</p>
"""


def ssh_check_page_handler(
    checks: SSHChecks, store: Store, oidc: OIDCLogin | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """With OIDC the page sends the browser to the provider: the owner of the source node approves by
    logging in. Without it, it names the command the operator runs."""

    async def handle(request: web.Request) -> web.StreamResponse:
        auth_id = request.match_info["auth_id"]
        check = checks.get(auth_id)
        if check is None:
            return web.Response(
                status=404,
                text="this SSH check link has expired or is unknown; connect again for a new one\n",
            )
        if oidc is not None:
            return await oidc.start(request, check)
        src, dst = store.nodes.get(check.src_id), store.nodes.get(check.dst_id)
        names = [
            html.escape(n.given_name) if n else f"node {i}"
            for n, i in ((src, check.src_id), (dst, check.dst_id))
        ]
        intro = (
            f"An SSH connection from <b>{names[0]}</b> to <b>{names[1]}</b> waits for approval. "
            "To let it in, run this on the pyheadscale server:"
        )
        body = _COMMANDS.format(auth_id=html.escape(auth_id))
        page = operator_page("SSH check", "Authentication check", intro, body)
        return web.Response(text=page, content_type="text/html")

    return handle
