"""dns.extra_records_path: extra DNS records from a JSON file, re-read whenever the file changes.

The file is what Headscale reads: a JSON array of tailcfg.DNSRecord objects (`name`, `type`, `value`; field
names matched case-insensitively, as Go's JSON decoder does), an empty file meaning no records. At start an
unreadable or invalid file is an error naming the key; later, a bad edit is logged and the last good records
stay in force, and a deleted file is waited for. Changes are noticed by polling the file's identity (inode,
size, mtime) once a second in a thread, then compared by content, so a touch without change sends nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

from pyheadscale.background import stop_task
from pyheadscale.config import ConfigError

log = logging.getLogger(__name__)

KEY = "dns.extra_records_path"
POLL_SECONDS = 1.0
MAX_FILE_BYTES = 1 << 20
MAX_RECORDS = 10_000
_FIELDS = ("Name", "Type", "Value")

Records = list[dict[str, str]]


def parse_records(data: bytes) -> Records:
    """The records in a file's bytes, canonical field names; ValueError saying what is wrong."""
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"the file is larger than {MAX_FILE_BYTES} bytes")
    if not data.strip():
        return []
    try:
        parsed = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(parsed, list):
        raise ValueError("must hold a JSON array of records")
    if len(parsed) > MAX_RECORDS:
        raise ValueError(f"more than {MAX_RECORDS} records")
    records: Records = []
    for index, item in enumerate(parsed):
        if not isinstance(item, dict):
            raise ValueError(f"record {index} is not an object")
        by_lower = {str(k).lower(): v for k, v in item.items()}
        record = {}
        for field in _FIELDS:
            value = by_lower.get(field.lower(), "")
            if not isinstance(value, str):
                raise ValueError(f"record {index}: {field.lower()} must be a string")
            record[field] = value
        if not record["Name"] or not record["Value"]:
            raise ValueError(f"record {index} needs a name and a value")
        records.append(record)
    return records


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _read(path: Path) -> Records:
    if path.is_dir():
        raise ValueError(f"{path} is a directory")
    with path.open("rb") as handle:
        return parse_records(handle.read(MAX_FILE_BYTES + 1))


class ExtraRecordsFile:
    """Owns the records of one file; calls `on_change(records)` on the event loop when they change."""

    def __init__(self, path: Path, on_change: Callable[[Records], None]) -> None:
        self.path = path
        self.on_change = on_change
        self.records: Records = []
        self._identity: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the file (an error naming the key if it cannot be used) and start watching it."""
        self._identity = await asyncio.to_thread(_identity, self.path)
        try:
            self.records = await asyncio.to_thread(_read, self.path)
        except OSError as exc:
            raise ConfigError(f"{KEY}: cannot read {self.path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{KEY}: {self.path}: {exc}") from None
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        await stop_task(self._task)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            identity = await asyncio.to_thread(_identity, self.path)
            if identity == self._identity:
                continue
            self._identity = identity
            if identity is None:
                log.warning("%s: %s is gone; keeping its last records until it is back", KEY, self.path)
                continue
            try:
                records = await asyncio.to_thread(_read, self.path)
            except (OSError, ValueError) as exc:
                log.error("%s: keeping the last records, %s is not usable: %s", KEY, self.path, exc)
                continue
            if records != self.records:
                self.records = records
                log.info("%s: %d records from %s", KEY, len(records), self.path)
                self.on_change(records)
