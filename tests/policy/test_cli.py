"""The ``policy check`` and ``policy simulate`` commands."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyheadscale.policy.cli import main, register_policy_commands
from tests.policy.corpus import case_files

GOOD = """{
  // teams
  "groups": {"group:eng": ["odin@example.com"]},
  "tagOwners": {"tag:web": ["group:eng"]},
  "acls": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:web:443"]},],
}
"""


def test_check_accepts_valid_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.hujson"
    path.write_text(GOOD)
    assert main(["check", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_reports_entry_and_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.hujson"
    path.write_text(GOOD.replace('"dst": ["tag:web:443"]', '"dst": ["tag:db:443"]'))
    assert main(["policy", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert 'acls[0].dst[0] (line 5:63): tag not found: "tag:db"' in err


def test_register_policy_commands_wires_subcommands(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    register_policy_commands(parser.add_subparsers(dest="command"))
    path = tmp_path / "p.json"
    path.write_text(GOOD)
    args = parser.parse_args(["policy", "check", str(path)])
    assert args.func(args) == 0


@pytest.mark.skipif(not case_files(), reason="compatibility corpus not found")
def test_simulate_prints_one_json_line_per_case() -> None:
    cases = case_files()[:3]
    result = subprocess.run(
        [sys.executable, "-m", "pyheadscale.policy", "simulate", *map(str, cases)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["id"] for line in lines] == [c.stem for c in cases]
    for line, case_path in zip(lines, cases, strict=True):
        case = json.loads(case_path.read_text())
        assert set(line) == {"id", "accepted", "error", "nodes"}
        if line["accepted"]:
            assert set(line["nodes"]) == {n["hostname"] for n in case["nodes"]}
