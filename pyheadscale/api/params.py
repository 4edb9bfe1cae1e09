"""Input checks shared by the service and pyheadscale's extra routes: ids, JSON bodies, tag names.

The Headscale rpcs take their input as headscale.v1 messages (see gateway.py); what is here serves the
routes beyond Headscale's (a path id, a JSON body read by hand) and the tag rules every caller gets.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from pyheadscale.api.errors import invalid
from pyheadscale.tags import api_tag_problem

MAX_ID = (1 << 63) - 1


def parse_id(value: Any, what: str) -> int:
    """A positive 64-bit id from a path segment, query value or JSON field."""
    if isinstance(value, bool) or value is None:
        raise invalid(f"{what} must be a positive integer id")
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise invalid(f"{what} must be a positive integer id, got {str(value)[:40]!r}")
    return int(text)


def path_id(request: web.Request, name: str, what: str) -> int:
    return parse_id(request.match_info[name], what)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; an empty body reads as `{}`."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: arrays nested thousands deep, which json.loads cannot descend.
        raise invalid("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    return body


def field(body: dict[str, Any], name: str) -> Any:
    """A body field by its proto name or its camelCase form; None when absent."""
    if name in body:
        return body[name]
    head, *rest = name.split("_")
    return body.get(head + "".join(part.title() for part in rest))


def check_tags(tags: list[str], what: str) -> list[str]:
    """Headscale's API rules for tags (pyheadscale/tags.py), checked before the store's."""
    for tag in tags:
        problem = api_tag_problem(tag)
        if problem:
            raise invalid(f"{what}: {tag[:60]!r}: {problem}")
    return tags
