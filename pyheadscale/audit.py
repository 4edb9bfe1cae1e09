"""The audit log: who did what to which node, user, key or policy, and whether it was allowed.

Entries are JSON lines `{"time", "actor", "action", "target", "outcome", ...details}` appended to a file
(written from a thread, in order) and kept in a bounded in-memory window for `/api/v1/audit`. The actor is
whoever is acting at the edge (an API key, the local CLI, a machine registering); the edge sets it in a
context variable, so the store, which makes every state change, can record it without every call passing it
along.

Secrets never reach an entry: preauth and API keys appear only as their public prefixes, and `record` refuses
detail values that look like a full key.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

actor: contextvars.ContextVar[str] = contextvars.ContextVar("audit_actor", default="system")

_SECRET = re.compile(r"(hskey-(auth|api)-[0-9a-f]{12}-[0-9a-f]+|privkey:[0-9a-f]{64})")
MEMORY_ENTRIES = 10_000


def redact(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET.sub("<redacted>", value)
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    return value


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: deque[dict[str, Any]] = deque(maxlen=MEMORY_ENTRIES)
        self._queue: asyncio.Queue[str | None] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(self._queue, self.path))

    def record(self, action: str, target: str, outcome: str = "success", **details: Any) -> None:
        entry = {
            "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "actor": actor.get(),
            "action": action,
            "target": target,
            "outcome": outcome,
        } | {k: redact(v) for k, v in details.items() if v is not None}
        self.entries.append(entry)
        if self._queue is not None:
            self._queue.put_nowait(json.dumps(entry, default=str))

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
    async def _write_loop(queue: asyncio.Queue[str | None], path: Path) -> None:
        """Write queued lines in batches until the closing sentinel (None) arrives."""
        closing = False
        while not closing:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            closing = None in batch
            lines = [line for line in batch if line is not None]
            if not lines:
                continue
            try:
                await asyncio.to_thread(_append, path, lines)
            except OSError as exc:
                log.error("audit log: cannot write %s: %s", path, exc)

    async def close(self) -> None:
        """Flush every recorded line to the file, then stop the writer (never cancelled mid-write)."""
        writer, queue = self._writer, self._queue
        if writer is None or queue is None:
            return
        self._writer = self._queue = None
        queue.put_nowait(None)
        await writer


def _append(path: Path, lines: list[str]) -> None:
    with path.open("a") as handle:
        handle.write("\n".join(lines) + "\n")
