"""The audit log: who did what to which node, user, key or policy, and whether it was allowed.

Entries are JSON lines `{"time", "actor", "action", "target", "outcome", ...details}` appended to a file
(written from a thread, in order) and kept in a bounded in-memory window for `/api/v1/audit`. The actor is
whoever is acting at the edge (an API key, the local CLI, a machine registering); the edge sets it in a
context variable, so the store, which makes every state change, can record it without every call passing it
along.

Secrets never reach an entry: preauth and API keys appear only as their public prefixes, and `record` refuses
detail values that look like a full key.

A stranger can make us write entries (every refused registration or API call is one), so nothing about an
entry is unbounded: each string is cut to `limits.audit.field_length` and each list to MAX_LIST_ITEMS, the
in-memory window holds at most `limits.audit.memory_bytes`, the file rotates at `limits.audit.file_max_bytes`
keeping `file_backups` old files, and refusals of unauthenticated requests (`record_refusal`) are rate-limited
per source: past the limit they are only counted, and the source's next entry says how many were dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyheadscale.config_limits import AuditLimits, RateConfig
from pyheadscale.ratelimit import RateLimiter, source_of

log = logging.getLogger(__name__)

actor: contextvars.ContextVar[str] = contextvars.ContextVar("audit_actor", default="system")

_SECRET = re.compile(r"(hskey-(auth|api)-[0-9a-f]{12}-[0-9a-f]+|privkey:[0-9a-f]{64})")
MEMORY_ENTRIES = 10_000
MAX_LIST_ITEMS = 64
# Sources whose dropped refusals are being counted; past this the oldest count is forgotten.
MAX_SUPPRESSED_SOURCES = 4096


def clip(text: str, length: int) -> str:
    """`text` cut to `length` characters, saying how much was cut (for attacker-influenced log fields)."""
    if len(text) <= length:
        return text
    return f"{text[:length]}...(+{len(text) - length} chars)"


def redact(value: Any, length: int = 512) -> Any:
    """Secrets replaced, strings clipped to `length`, lists and objects to MAX_LIST_ITEMS entries."""
    if isinstance(value, str):
        return clip(_SECRET.sub("<redacted>", value), length)
    if isinstance(value, list | tuple):
        items = [redact(v, length) for v in value[:MAX_LIST_ITEMS]]
        if len(value) > MAX_LIST_ITEMS:
            items.append(f"...(+{len(value) - MAX_LIST_ITEMS} items)")
        return items
    if isinstance(value, dict):
        pairs = list(value.items())[:MAX_LIST_ITEMS]
        return {clip(str(k), length): redact(v, length) for k, v in pairs}
    return value


# How long a recorded line may wait for others before the writer thread appends them together.
WRITE_GATHER_SECONDS = 0.05


class AuditLog:
    def __init__(
        self,
        path: Path | None,
        limits: AuditLimits | None = None,
        refusals: RateConfig | None = None,
        *,
        on_suppressed: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.limits = limits or AuditLimits()
        self.entries: deque[dict[str, Any]] = deque(maxlen=MEMORY_ENTRIES)
        self._sizes: deque[int] = deque()
        self.memory_bytes = 0
        refusals = refusals or RateConfig(per_second=1, burst=20)
        self._refusals = RateLimiter(refusals.per_second, refusals.burst)
        self._suppressed: OrderedDict[str, int] = OrderedDict()
        self._on_suppressed = on_suppressed
        self._queue: asyncio.Queue[str | None] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue = asyncio.Queue()
        rotation = _Rotation(self.path, self.limits.file_max_bytes, self.limits.file_backups)
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(self._queue, rotation))

    def record(self, action: str, target: str, outcome: str = "success", **details: Any) -> None:
        length = self.limits.field_length
        entry = {
            "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "actor": redact(actor.get(), length),
            "action": action,
            "target": redact(target, length),
            "outcome": outcome,
        } | {k: redact(v, length) for k, v in details.items() if v is not None}
        line = json.dumps(entry, default=str)
        if len(self.entries) == self.entries.maxlen:
            self.memory_bytes -= self._sizes.popleft()
        self.entries.append(entry)
        self._sizes.append(len(line))
        self.memory_bytes += len(line)
        while self.memory_bytes > self.limits.memory_bytes and len(self.entries) > 1:
            self.entries.popleft()
            self.memory_bytes -= self._sizes.popleft()
        if self._queue is not None:
            self._queue.put_nowait(line)

    def record_refusal(
        self, source: str | None, action: str, target: str, outcome: str = "denied", **details: Any
    ) -> bool:
        """Record a refusal of an unauthenticated request from `source` (an address), unless that source is
        past its audit rate; then only count it. Returns whether an entry was written."""
        key = source_of(source)
        if self._refusals.retry_after(key):
            self._suppressed[key] = self._suppressed.pop(key, 0) + 1
            if len(self._suppressed) > MAX_SUPPRESSED_SOURCES:
                self._suppressed.popitem(last=False)
            if self._on_suppressed is not None:
                self._on_suppressed()
            return False
        dropped = self._suppressed.pop(key, None)
        self.record(action, target, outcome, source=key, suppressed_before=dropped, **details)
        return True

    def query(
        self, *, action: str | None = None, target: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Newest last, filtered by exact action and by target prefix (e.g. `node:3`)."""
        out = [
            e
            for e in self.entries
            if (action is None or e["action"] == action)
            and (target is None or e["target"].startswith(target))
        ]
        return out[-limit:]

    @staticmethod
    async def _write_loop(queue: asyncio.Queue[str | None], rotation: _Rotation) -> None:
        """Write queued lines in batches until the closing sentinel (None) arrives."""
        closing = False
        while not closing:
            batch = [await queue.get()]
            if batch[0] is not None:
                # Let a burst gather: one hand-off to the thread per burst, not per line (a registration
                # storm records a line per node, and each hand-off cost more than the write).
                await asyncio.sleep(WRITE_GATHER_SECONDS)
            while not queue.empty():
                batch.append(queue.get_nowait())
            closing = None in batch
            lines = [line for line in batch if line is not None]
            if not lines:
                continue
            try:
                await asyncio.to_thread(rotation.append, lines)
            except OSError as exc:
                log.error("audit log: cannot write %s: %s", rotation.path, exc)

    async def close(self) -> None:
        """Flush every recorded line to the file, then stop the writer (never cancelled mid-write)."""
        writer, queue = self._writer, self._queue
        if writer is None or queue is None:
            return
        self._writer = self._queue = None
        queue.put_nowait(None)
        await writer


class _Rotation:
    """Appends lines to the audit file, moving it to `.1` (and `.1` to `.2`, ...) when it would pass
    `max_bytes`; with no backups the file simply starts over. Runs in the writer's thread only."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._size: int | None = None

    def append(self, lines: list[str]) -> None:
        if self._size is None:
            self._size = self.path.stat().st_size if self.path.exists() else 0
        chunk: list[bytes] = []
        for line in lines:
            data = line.encode() + b"\n"
            if self._size and self._size + len(data) > self.max_bytes:
                self._write(chunk)
                chunk = []
                self._rotate()
            chunk.append(data)
            self._size += len(data)
        self._write(chunk)

    def _write(self, chunk: list[bytes]) -> None:
        if chunk:
            # Owner-only from creation, also for each file a rotation starts.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "ab") as handle:
                handle.write(b"".join(chunk))

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        for index in range(self.backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            newer = self.path if index == 1 else self.path.with_name(f"{self.path.name}.{index - 1}")
            if newer.exists():
                newer.replace(older)
        self._size = 0
