"""The inner-request recorder masks preauth keys before anything reaches the disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyheadscale.control.recorder import record, recorder_dir
from pyheadscale.tailkey import MachinePublic

MACHINE = MachinePublic(b"\xab" * 32)


@pytest.mark.parametrize(
    "body",
    [
        '{"Auth":{"AuthKey":"hskey-auth-SECRET-abc"}}',
        '{"Auth": {"AuthKey" : "hskey-auth-SECRET-abc", "LoginName": ""}}',
        '{"a": 1, "Auth":{"Provider":"","AuthKey":"tskey-SECRET"}}',
    ],
)
def test_auth_key_masked(tmp_path: Path, body: str) -> None:
    record(tmp_path, MACHINE, {"method": "POST", "path": "/machine/register", "body": body})
    (path,) = tmp_path.iterdir()
    assert path.name == "ab" * 8 + ".jsonl"
    text = path.read_text()
    assert "SECRET" not in text
    entry = json.loads(text)
    assert json.loads(entry["body"])["Auth"]["AuthKey"] == "<redacted>"
    assert isinstance(entry["time"], float)


def test_appends_one_line_per_request(tmp_path: Path) -> None:
    for i in range(3):
        record(tmp_path / "sub", MACHINE, {"method": "POST", "path": f"/p{i}", "body": "{}"})
    lines = (tmp_path / "sub" / ("ab" * 8 + ".jsonl")).read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["/p0", "/p1", "/p2"]


def test_recorder_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PYHEADSCALE_RECORD_DIR", raising=False)
    assert recorder_dir() is None
    monkeypatch.setenv("PYHEADSCALE_RECORD_DIR", str(tmp_path))
    assert recorder_dir() == tmp_path
