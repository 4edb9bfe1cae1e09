"""The reference programs are the versions we pin, and each one runs."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import refbin


def test_each_version_has_its_own_cache_directory() -> None:
    pinned = refbin.resolve("tailscaled")
    newest = refbin.resolve(f"tailscaled@{refbin.TAILSCALE_NEWEST.lstrip('v')}")
    assert pinned.version == refbin.TAILSCALE_PINNED
    assert pinned.directory != newest.directory
    assert refbin.CACHE_ROOT in pinned.path.parents


def test_unknown_program_is_named_in_the_error() -> None:
    with pytest.raises(KeyError, match="tailscalez"):
        refbin.resolve("tailscalez")


@pytest.mark.parametrize(
    ("name", "argv", "expected"),
    [
        ("tailscale", ["version"], refbin.TAILSCALE_PINNED.lstrip("v")),
        (
            f"tailscale@{refbin.TAILSCALE_NEWEST.lstrip('v')}",
            ["version"],
            refbin.TAILSCALE_NEWEST.lstrip("v"),
        ),
        (
            f"tailscale@{refbin.TAILSCALE_OLDEST.lstrip('v')}",
            ["version"],
            refbin.TAILSCALE_OLDEST.lstrip("v"),
        ),
        ("tailscaled", ["--version"], refbin.TAILSCALE_PINNED.lstrip("v")),
        ("headscale", ["version"], refbin.HEADSCALE_VERSION.lstrip("v")),
    ],
)
def test_built_program_reports_its_pinned_version(
    reference_binary: Callable[[str], Path], name: str, argv: list[str], expected: str
) -> None:
    path = reference_binary(name)
    out = subprocess.run([str(path), *argv], capture_output=True, text=True, timeout=60)
    assert expected in out.stdout + out.stderr


def test_derper_and_pebble_run(reference_binary: Callable[[str], Path]) -> None:
    for name in ("derper", "pebble"):
        path = reference_binary(name)
        out = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60)
        assert "Usage" in out.stdout + out.stderr or "usage" in (out.stdout + out.stderr).lower(), name
