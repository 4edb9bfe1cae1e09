"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests import refbin
from tests.live_server import LiveServer, StartLive


@pytest.fixture
def reference_binary() -> Callable[[str], Path]:
    """`reference_binary("tailscaled")` is the path of a pinned reference program (see tests/refbin.py).

    Builds it on first use; skips the test, naming the reason, where it cannot be had (no Go toolchain).
    """

    def get(name: str) -> Path:
        try:
            return refbin.binary(name)
        except refbin.Unavailable as exc:
            pytest.skip(f"reference program {name} unavailable: {exc}")

    return get


@pytest.fixture
async def start_live(tmp_path: Path) -> AsyncIterator[StartLive]:
    """`await start_live(**config_keys)` starts a `LiveServer`; each is stopped when the test ends.

    Each gets its own data directory under `tmp_path` unless `data_dir=` is given; `keepalive=`, `port=` and
    `scheme=` go to `LiveServer`, the other keywords are config keys.
    """
    started: list[LiveServer] = []

    async def start(**kwargs: Any) -> LiveServer:
        data_dir = kwargs.pop("data_dir", tmp_path / f"server{len(started)}")
        live = await LiveServer(data_dir, **kwargs).start()
        started.append(live)
        return live

    yield start
    for live in started:
        await live.stop()


@pytest.fixture
async def live(start_live: StartLive) -> LiveServer:
    """A started `LiveServer` with the default config."""
    return await start_live()
