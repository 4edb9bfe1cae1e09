"""Run the real CLI against a live in-process server.

`cli` calls `pyheadscale.cli.main.main` in a worker thread (the server keeps serving on the test's loop) and
captures what it prints; `cli_process` runs `python -m pyheadscale` in a subprocess (exit codes, env).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyheadscale.cli.main import main
from tests.live_server import LiveServer


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


RunCli = Callable[..., Awaitable[Result]]


@pytest.fixture
def config_file(live: LiveServer, tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(live.raw))
    return path


@pytest.fixture
def cli(config_file: Path) -> RunCli:
    async def run(*argv: str, stdin: str = "") -> Result:
        def call() -> Result:
            out, err = io.StringIO(), io.StringIO()
            saved_stdin = sys.stdin
            sys.stdin = io.StringIO(stdin)
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = main(["-c", str(config_file), *argv])
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
            finally:
                sys.stdin = saved_stdin
            return Result(code, out.getvalue(), err.getvalue())

        return await asyncio.to_thread(call)

    return run


@pytest.fixture
def cli_process(config_file: Path) -> RunCli:
    async def run(*argv: str, env: dict[str, str] | None = None, config: bool = True) -> Result:
        args = ["-c", str(config_file), *argv] if config else list(argv)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pyheadscale",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        out, err = await proc.communicate()
        return Result(proc.returncode or 0, out.decode(), err.decode())

    return run
