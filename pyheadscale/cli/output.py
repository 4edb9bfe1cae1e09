"""Printing results: a readable table by default, or `-o json|json-line|yaml` carrying the API's JSON as is.

Machine formats print exactly what the API answered (same field names), so scripts written against Headscale's
CLI output keep working.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

FORMATS = ("json", "json-line", "yaml")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

Rows = list[list[str]]


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """`-o` and `--force` on a verb as well as globally; SUPPRESS keeps a verb from resetting the global."""
    parser.add_argument(
        "-o",
        "--output",
        choices=("", *FORMATS),
        default=argparse.SUPPRESS,
        help="output format: empty for a table, or json, json-line, yaml",
    )
    parser.add_argument(
        "--force", action="store_true", default=argparse.SUPPRESS, help="do not ask for confirmation"
    )


def output_format(args: argparse.Namespace) -> str:
    return str(getattr(args, "output", "") or "")


def render(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "json-line":
        return json.dumps(data, separators=(",", ":"))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")


def table(header: Sequence[str], rows: Rows) -> str:
    """Columns padded to their widest cell; a multi-value cell is joined with ', '."""
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [
        " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
        for line in (list(header), *rows)
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(args: argparse.Namespace, data: Any, human: Callable[[], str]) -> None:
    """Print `data` in the requested machine format, or the human rendering when none was asked for."""
    fmt = output_format(args)
    print(render(data, fmt) if fmt else human())


def emit_error(args: argparse.Namespace, message: str) -> None:
    fmt = output_format(args)
    print(render({"error": message}, fmt) if fmt else f"Error: {message}", file=sys.stderr)


def when(stamp: str | None, *, empty: str = "") -> str:
    """An API timestamp shown in UTC to the second."""
    if not stamp:
        return empty
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return parsed.astimezone(UTC).strftime(TIME_FORMAT)


def is_past(stamp: str | None) -> bool:
    if not stamp:
        return False
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")) <= datetime.now(UTC)
    except ValueError:
        return False


def joined(values: Sequence[str] | None) -> str:
    return ", ".join(values or [])


def split_list(values: Sequence[str] | None) -> list[str]:
    """A list flag given repeatedly and/or comma-separated (`-t a,b -t c`), as cobra's StringSlice reads."""
    out: list[str] = []
    for value in values or []:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


async def confirm(args: argparse.Namespace, prompt: str) -> bool:
    """Ask before destroying something, unless --force; no one to answer counts as no.

    The prompt waits in a thread so the event loop is never blocked on the terminal.
    """
    if getattr(args, "force", False):
        return True
    try:
        answer = await asyncio.to_thread(input, f"{prompt} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
