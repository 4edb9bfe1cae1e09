"""`--expiration` flags: a duration from now (`90d`, `1h30m`), turned into the RFC 3339 time the API takes."""

from __future__ import annotations

from datetime import UTC, datetime

from pyheadscale.cli.client import CliError
from pyheadscale.config import parse_duration


def expiration_from(text: str) -> str:
    try:
        duration = parse_duration(text)
    except ValueError as exc:
        raise CliError(f"--expiration: {exc}") from None
    if duration.total_seconds() <= 0:
        raise CliError(f"--expiration must be a positive duration such as 1h or 90d, not {text!r}")
    return (datetime.now(UTC) + duration).isoformat().replace("+00:00", "Z")
