"""Hypothesis profiles for the fuzz tests: `ci` (the default) is a short bounded run that keeps the whole
directory to about a minute; `long` is what benchmarks/fuzz_long.py runs. PYHEADSCALE_FUZZ_PROFILE picks one,
PYHEADSCALE_FUZZ_EXAMPLES overrides the number of examples per test, and PYHEADSCALE_FUZZ_STATS names a JSON
file that gets the number of executions per target at the end of the session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz import bounds

_QUIET_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile(
    "ci", max_examples=30, deadline=None, database=None, suppress_health_check=_QUIET_CHECKS
)
settings.register_profile(
    "long", max_examples=5_000, deadline=None, database=None, suppress_health_check=_QUIET_CHECKS
)
_profile = os.environ.get("PYHEADSCALE_FUZZ_PROFILE", "ci")
if os.environ.get("PYHEADSCALE_FUZZ_EXAMPLES"):
    settings.register_profile(
        "custom", settings.get_profile(_profile), max_examples=int(os.environ["PYHEADSCALE_FUZZ_EXAMPLES"])
    )
    _profile = "custom"
settings.load_profile(_profile)


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("PYHEADSCALE_FUZZ_STATS")
    if target:
        Path(target).write_text(json.dumps(dict(bounds.EXECUTIONS), indent=1, sort_keys=True))
