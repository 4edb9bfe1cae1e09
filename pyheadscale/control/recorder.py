"""Recording the decrypted requests a client sends inside the Noise channel, for fixtures and debugging.

With `PYHEADSCALE_RECORD_DIR` set (read as each TS2021 session starts), every inner request is appended,
before its handler runs, as one JSON line to `<dir>/<first 16 hex digits of the machine key>.jsonl`: method,
path, query, headers, body (as UTF-8, undecodable bytes replaced), the session's capability version and the
time. Responses are not recorded. Every `"AuthKey"` string in a body (a preauth key) is replaced by
`<redacted>` before anything is written; nothing else is masked.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from pyheadscale.tailkey import MachinePublic

_AUTH_KEY = re.compile(r'("AuthKey"\s*:\s*")[^"]*(")')


def recorder_dir() -> Path | None:
    value = os.environ.get("PYHEADSCALE_RECORD_DIR")
    return Path(value) if value else None


def record(directory: Path, machine_key: MachinePublic, entry: dict[str, Any]) -> None:
    """Append `entry`, its auth key masked and the time added (call it in a thread: it does file I/O)."""
    body = entry.get("body")
    if isinstance(body, str):
        entry["body"] = _AUTH_KEY.sub(r"\1<redacted>\2", body)
    entry["time"] = time.time()
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f"{machine_key.hex()[:16]}.jsonl").open("a") as handle:
        handle.write(json.dumps(entry) + "\n")
