"""Limits tests run against the control-plane harness (an in-process server on a free loopback port)."""

from __future__ import annotations

from tests.control.conftest import harness, make_harness

__all__ = ["harness", "make_harness"]
