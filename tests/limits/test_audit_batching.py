"""The audit file is appended once per burst of entries, not once per entry, and nothing is lost at close."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pyheadscale import audit
from pyheadscale.audit import AuditLog


async def test_a_burst_of_entries_is_one_append_and_close_writes_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    appends: list[int] = []
    append = audit._Rotation.append

    def counting(self: Any, lines: list[str]) -> None:
        appends.append(len(lines))
        append(self, lines)

    monkeypatch.setattr(audit._Rotation, "append", counting)
    log = AuditLog(tmp_path / "audit.log")
    await log.start()
    for i in range(100):  # a registration storm: one entry per node, each in its own loop turn
        log.record("node.register", f"node:{i}")
        await asyncio.sleep(0)
    await asyncio.sleep(audit.WRITE_GATHER_SECONDS * 4)
    log.record("node.delete", "node:0")  # recorded just before shutdown
    await log.close()
    assert sum(appends) == 101
    assert appends[0] == 100 and len(appends) == 2, appends
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert [json.loads(line)["target"] for line in lines] == [f"node:{i}" for i in range(100)] + ["node:0"]
