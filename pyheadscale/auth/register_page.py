"""The page a login URL (`/register/<auth id>`) shows: what the operator runs to let the machine in, or, when
OIDC is configured, a redirect to the identity provider."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable

from aiohttp import web

from pyheadscale.auth.interactive import AUTH_ID_PREFIX, PendingLogins
from pyheadscale.auth.oidc_login import OIDCLogin
from pyheadscale.auth.operator_page import operator_page

_COMMANDS = """<code>pyheadscale auth register --auth-id {auth_id} --user USERNAME</code>
<p>(or, as older Headscale releases spell it:
<code>pyheadscale nodes register --key {auth_id} --user USERNAME</code>)</p>
<p>The machine waiting for this login will join as soon as the command has run;
it does not need restarting.</p>
"""


def register_page_handler(
    logins: PendingLogins, oidc: OIDCLogin | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        auth_id = request.match_info["auth_id"]
        if not auth_id.startswith(AUTH_ID_PREFIX):
            return web.Response(status=400, text="this is not a registration link\n")
        login = logins.get(auth_id)
        if login is None:
            return web.Response(
                status=404,
                text="this registration link has expired or is unknown; "
                "run `tailscale up` again for a new one\n",
            )
        if oidc is not None:
            return await oidc.start(request, login)
        intro = (
            f"The machine <b>{html.escape(login.hostname)}</b> asks to join this tailnet. "
            "To let it in, run this on the pyheadscale server:"
        )
        body = _COMMANDS.format(auth_id=html.escape(auth_id))
        page = operator_page("node registration", "Node registration", intro, body)
        return web.Response(text=page, content_type="text/html")

    return handle
