"""The HTML pages a person sees during an OpenID login: the confirmation, success, or why it did not work.

A login ends in a browser, so every outcome is a readable page (not a bare status code) that says what
happened and, where it helps, how to try again. Everything interpolated is escaped.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pyheadscale: {title}</title>
<style>body{{font-family:sans-serif;max-width:44em;margin:3em auto;padding:0 1em}}</style></head>
<body><h1>{title}</h1>
{paragraphs}
</body></html>
"""


# No page of a login may be framed by another site (a framed confirmation button could be clickjacked).
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
}


def page(status: int, title: str, *paragraphs: str, retry_url: str = "", form_html: str = "") -> web.Response:
    """An HTML response; `paragraphs` are plain text, `retry_url` adds a link to start the login again,
    `form_html` (already escaped) follows the paragraphs."""
    body = [f"<p>{html.escape(text)}</p>" for text in paragraphs]
    if form_html:
        body.append(form_html)
    if retry_url:
        body.append(
            f'<p><a href="{html.escape(retry_url)}">Log in again</a> (for example with another account).</p>'
        )
    text = _PAGE.format(title=html.escape(title), paragraphs="\n".join(body))
    return web.Response(status=status, text=text, content_type="text/html", headers=_HEADERS)


@dataclass(frozen=True, slots=True)
class MachineRequest:
    """What the confirmation page says about the machine asking to join."""

    hostname: str
    os: str
    fingerprint: str
    asked_at: datetime


def confirmation(
    machine: MachineRequest, account: str, user_name: str, action: str, fields: dict[str, str]
) -> web.Response:
    """Ask the person to confirm that this machine is theirs before it is registered to them."""
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items()
    )
    form_html = (
        f'<form method="post" action="{html.escape(action)}">{hidden}'
        '<button type="submit">Register this machine to me</button></form>'
    )
    return page(
        200,
        "Confirm the machine",
        f"You are signed in as {account}.",
        f"A machine asks to join the tailnet as your user {user_name}:",
        f"Hostname: {machine.hostname}",
        f"Operating system: {machine.os or 'not given'}",
        f"Machine key: {machine.fingerprint}",
        f"Asked at: {machine.asked_at.strftime('%Y-%m-%d %H:%M:%S UTC')}",
        "Register it only if you started this login yourself, on this machine. If you did not, close "
        "this page: nothing is registered without this confirmation.",
        form_html=form_html,
    )


def success(hostname: str, user_display: str) -> web.Response:
    return page(
        200,
        "Login successful",
        f"The machine {hostname} is now registered to {user_display}.",
        "You can close this window; the machine connects on its own.",
    )


def refused(reason: str, retry_url: str) -> web.Response:
    return page(
        403,
        "Login refused",
        f"This login is not allowed: {reason}.",
        "The machine has not been registered. Ask the administrator of this tailnet for access.",
        retry_url=retry_url,
    )


def bad_request(status: int, title: str, reason: str) -> web.Response:
    return page(
        status,
        title,
        reason,
        "Start the login again from the machine (for example `tailscale up`) to get a fresh link.",
    )
