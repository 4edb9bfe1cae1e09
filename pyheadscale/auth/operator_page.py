"""The HTML page a waiting login or SSH check links to when no OIDC provider is configured: what it waits
for, and the commands the operator runs on the server to settle it."""

from __future__ import annotations

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pyheadscale: {title}</title>
<style>body{{font-family:sans-serif;max-width:44em;margin:3em auto;padding:0 1em}}
code{{background:#f3f3f3;padding:.6em;display:block;overflow-x:auto}}</style></head>
<body><h1>{heading}</h1>
<p>{intro}</p>
{body}</body></html>
"""


def operator_page(title: str, heading: str, intro: str, body: str) -> str:
    """The page's HTML; `intro` and `body` are HTML already (escape what they carry from outside)."""
    return _PAGE.format(title=title, heading=heading, intro=intro, body=body)
