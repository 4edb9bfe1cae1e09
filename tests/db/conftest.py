"""A throwaway PostgreSQL server for the tests that prove the PostgreSQL path (see tests/db/pgserver.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.db.pgserver import throwaway_postgres, unavailable


@pytest.fixture(scope="session")
def postgres() -> Iterator[dict[str, object]]:
    """Connection settings (pyheadscale's `database.postgres` keys) of a fresh server on 127.0.0.1."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    with throwaway_postgres() as settings:
        yield settings
