"""Naming rules for what the store holds: user names, node names (DNS labels) and tags."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from pyheadscale.state.errors import StateError
from pyheadscale.tags import tag_problem

_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,62}")


def now() -> datetime:
    return datetime.now(UTC)


def check_user_name(name: str) -> None:
    if not _USERNAME.fullmatch(name or ""):
        raise StateError(f"invalid user name {name!r}: use letters, digits and . _ @ + - (at most 63)")


def dns_label(hostname: str) -> str:
    """A hostname made into a DNS label: lowercase, [a-z0-9-], at most 63 characters, never empty."""
    label = re.sub(r"[^a-z0-9-]+", "-", hostname.lower()).strip("-")[:63].strip("-")
    return label or "node"


def validate_tags(tags: Iterable[str]) -> list[str]:
    """`tags` sorted and without repeats; StateError naming the first that is not a tag."""
    out = []
    for tag in tags:
        problem = tag_problem(tag)
        if problem:
            raise StateError(f"invalid tag {tag[:60]!r}: {problem}")
        if tag not in out:
            out.append(tag)
    return sorted(out)
