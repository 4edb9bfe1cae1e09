"""Printing results: a readable table by default, or `-o json|json-line|yaml` as Headscale's CLI prints them.

Machine formats print the headscale.v1 messages the way Headscale's Go CLI serializes its structs (see
gostruct), so scripts written against `headscale ... -o json` keep working.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from pyheadscale.cli import gostruct

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
        return gostruct.dumps_json(data, indent=True)
    if fmt == "json-line":
        return gostruct.dumps_json(data, indent=False)
    return gostruct.dumps_yaml(data)


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


def when(stamp: Timestamp | None, *, empty: str = "") -> str:
    """A message's timestamp shown in UTC to the second; `empty` when unset."""
    if stamp is None:
        return empty
    return stamp.ToDatetime(UTC).strftime(TIME_FORMAT)


def is_past(stamp: Timestamp | None) -> bool:
    return stamp is not None and stamp.ToDatetime(UTC) <= datetime.now(UTC)


def stamp_of(message: Any, field: str) -> Timestamp | None:
    """The Timestamp field `field` of `message`, or None when unset."""
    return getattr(message, field) if message.HasField(field) else None


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
    print(f"{prompt} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = await asyncio.to_thread(input)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
