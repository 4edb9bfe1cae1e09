"""What every section of the configuration is built from: a frozen model, and Go-style durations."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section: immutable once loaded; keys it does not model are reported by config_keys."""

    model_config = ConfigDict(extra="ignore", frozen=True)


# Go's units plus the d/w/y that Headscale's node.expiry accepts (Prometheus durations).
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "y": 365 * 86400,
}


def parse_duration(value: Any) -> timedelta:
    """Parse a Go-style duration ("30m", "1h30m", "90s", "0") or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration (use e.g. '30m', '3h', '90s')")
    text = value.strip()
    if text in ("0", ""):
        return timedelta(0)
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"{value!r} is not a duration (use e.g. '30m', '3h', '90s')")
    return timedelta(seconds=total)
