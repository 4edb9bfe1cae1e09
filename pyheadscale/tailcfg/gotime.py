"""Times as Go's encoding/json writes and reads them (RFC 3339, UTC with a trailing Z, nanoseconds at most).

Go has no null time: a time.Time that was never set is the zero time, written as 0001-01-01T00:00:00Z. Here
that is None both ways, so callers never see year 1.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

GO_ZERO_TIME = "0001-01-01T00:00:00Z"


@functools.lru_cache(maxsize=16384)
def go_time(value: datetime | None) -> str:
    """A time as Go's JSON writes it. Cached: every full map formats each offline peer's LastSeen."""
    if value is None:
        return GO_ZERO_TIME
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_go_time(text: str | None) -> datetime | None:
    """Parse a Go RFC 3339 time; the zero time and absent values are None.

    Raises ValueError for anything Go's time.Time would not decode, including a time without a zone.
    """
    if not text or text.startswith("0001-01-01"):
        return None
    cleaned = text.replace("Z", "+00:00")
    # Go writes up to nanoseconds; Python's parser takes microseconds.
    if "." in cleaned:
        head, _, rest = cleaned.partition(".")
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        zone = rest[len(digits) :]
        cleaned = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None or "T" not in cleaned:
        raise ValueError(f"{text!r} is not an RFC 3339 time (date, time and zone are required)")
    return parsed.astimezone(UTC)
