"""Reading request input (path ids, query parameters, JSON bodies), validated with messages naming the field.

Headscale's JSON carries 64-bit ids as strings (protobuf's int64 mapping); we accept a string or a number,
and a body may spell a field in snake_case (proto names) or camelCase (protojson's default), as grpc-gateway
does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from pyheadscale.api.errors import invalid

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


def parse_time(value: Any, what: str) -> datetime:
    """An RFC 3339 timestamp (a `Z` suffix or an offset; naive times are taken as UTC)."""
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"{what} must be an RFC 3339 timestamp such as 2030-01-02T15:04:05Z")
    try:
        stamp = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise invalid(
            f"{what} {value[:40]!r} is not an RFC 3339 timestamp such as 2030-01-02T15:04:05Z"
        ) from None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; an empty body reads as `{}` (every body field is optional somewhere)."""
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


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def field(body: dict[str, Any], name: str) -> Any:
    """A body field by its proto name or its camelCase form; None when absent."""
    if name in body:
        return body[name]
    return body.get(_camel(name))


def str_field(body: dict[str, Any], name: str) -> str:
    value = field(body, name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    return value


def bool_field(body: dict[str, Any], name: str) -> bool:
    value = field(body, name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false")
    return value


def str_list_field(body: dict[str, Any], name: str) -> list[str]:
    value = field(body, name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid(f"{name} must be a list of strings")
    return value


def optional_time_field(body: dict[str, Any], name: str) -> datetime | None:
    value = field(body, name)
    return None if value in (None, "") else parse_time(value, name)


def check_tags(tags: list[str], what: str) -> list[str]:
    """Headscale's tag rules, checked before the store's: a `tag:` prefix, lowercase, no spaces."""
    for tag in tags:
        if not tag.startswith("tag:"):
            raise invalid(f"{what}: {tag[:60]!r} must start with 'tag:'")
        if tag != tag.lower():
            raise invalid(f"{what}: {tag[:60]!r} must be lowercase")
        if any(ch.isspace() for ch in tag):
            raise invalid(f"{what}: {tag[:60]!r} must not contain spaces")
    return tags


def optional_id(value: Any, what: str) -> int | None:
    """An optional id: absent, empty or "0" (protobuf's zero value) mean none."""
    if value in (None, "", 0, "0"):
        return None
    return parse_id(value, what)
