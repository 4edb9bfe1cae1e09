"""The HTML pages a person sees at the end of an OpenID login: success, or why it did not work.

A login ends in a browser, so every outcome is a readable page (not a bare status code) that says what
happened and, where it helps, how to try again. Everything interpolated is escaped.
"""

from __future__ import annotations

import html

from aiohttp import web

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pyheadscale: {title}</title>
<style>body{{font-family:sans-serif;max-width:44em;margin:3em auto;padding:0 1em}}</style></head>
<body><h1>{title}</h1>
{paragraphs}
</body></html>
"""


def page(status: int, title: str, *paragraphs: str, retry_url: str = "") -> web.Response:
    """An HTML response; `paragraphs` are plain text, `retry_url` adds a link to start the login again."""
    body = [f"<p>{html.escape(text)}</p>" for text in paragraphs]
    if retry_url:
        body.append(
            f'<p><a href="{html.escape(retry_url)}">Log in again</a> (for example with another account).</p>'
        )
    text = _PAGE.format(title=html.escape(title), paragraphs="\n".join(body))
    return web.Response(
        status=status, text=text, content_type="text/html", headers={"Cache-Control": "no-store"}
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
