"""Recording the decrypted requests a client sends inside the Noise channel, for fixtures and debugging.

Set `PYHEADSCALE_RECORD_DIR` and every inner request (method, path, query, headers, body) and the status it
got is appended as a JSON line to `<dir>/<machine key prefix>.jsonl`. Preauth keys in bodies are masked
before anything is written.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

_AUTH_KEY = re.compile(r'("AuthKey"\s*:\s*")[^"]*(")')


def recorder_dir() -> Path | None:
    value = os.environ.get("PYHEADSCALE_RECORD_DIR")
    return Path(value) if value else None


def record(directory: Path, machine_key: str, entry: dict[str, Any]) -> None:
    """Append one entry (called from a thread: it does file I/O)."""
    body = entry.get("body")
    if isinstance(body, str):
        entry["body"] = _AUTH_KEY.sub(r"\1<redacted>\2", body)
    entry["time"] = time.time()
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f"{machine_key.removeprefix('mkey:')[:16]}.jsonl").open("a") as handle:
        handle.write(json.dumps(entry) + "\n")
