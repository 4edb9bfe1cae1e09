"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests import refbin


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
