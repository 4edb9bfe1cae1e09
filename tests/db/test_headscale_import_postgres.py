"""Taking over a PostgreSQL database real Headscale v0.29.2 made (fixtures/headscale-v0.29.2-postgres,
recorded by tests/e2e/headscale_takeover_driver.py --db postgres --record): everything carries over,
Headscale's tables are kept in a backup schema, keys made by Headscale work, and a newer database is refused
untouched.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from pyheadscale.db.database import Database
from pyheadscale.db.headscale_versions import UnsupportedHeadscaleDatabase
from pyheadscale.state.ipalloc import IPAllocator
from pyheadscale.state.store import Store

RECORDING = Path(__file__).resolve().parents[2] / "fixtures" / "headscale-v0.29.2-postgres"
_numbers = itertools.count()


def dump_statements() -> str:
    """pg_dump's SQL without psql's backslash commands (asyncpg runs plain SQL)."""
    lines = (RECORDING / "dump.sql").read_text().splitlines()
    return "\n".join(line for line in lines if not line.startswith("\\"))


@pytest.fixture
async def headscale_db(postgres: dict[str, object]) -> AsyncIterator[tuple[str, dict[str, object]]]:
    """A fresh database holding what Headscale wrote; yields its SQLAlchemy URL and connection settings."""
    name = f"headscale_{next(_numbers)}"
    settings = {**postgres, "name": name}
    admin = await asyncpg.connect(**_asyncpg(postgres))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(**_asyncpg(settings))
    try:
        await conn.execute(dump_statements())
    finally:
        await conn.close()
    p = settings
    yield f"postgresql+asyncpg://{p['user']}:{p['password']}@{p['host']}:{p['port']}/{name}", settings


def _asyncpg(settings: dict[str, object]) -> dict[str, object]:
    keys = {"host": "host", "port": "port", "user": "user", "password": "password", "name": "database"}
    return {theirs: settings[ours] for ours, theirs in keys.items()}


async def test_headscale_postgres_database_is_taken_over(headscale_db: tuple[str, dict[str, object]]) -> None:
    url, settings = headscale_db
    db = await Database.open_url(url)
    store = Store(db, IPAllocator("100.64.0.0/10", "fd7a:115c:a1e0::/48", "sequential"))
    try:
        await store.load()
        recorded = json.loads((RECORDING / "nodes.json").read_text())
        nodes = {n.hostname: n for n in store.nodes.values()}
        assert set(nodes) == set(recorded)
        for host, want in recorded.items():
            node = nodes[host]
            assert (str(node.id), node.machine_key, node.node_key) == (
                want["id"],
                want["machine_key"],
                want["node_key"],
            )
            assert sorted(a.split("/")[0] for a in node.addresses()) == want["ips"]
            assert (sorted(node.tags), sorted(node.approved_routes)) == (
                want["tags"],
                want["approved_routes"],
            )
        alice = store.user_by_name("alice")
        assert alice is not None and alice.email == "alice@example.com"
        keys = json.loads((RECORDING / "keys.json").read_text())
        assert (await store.verify_preauth_key(keys["preauth_key_alice"])).user_id == alice.id
        assert (await store.verify_preauth_key(keys["preauth_key_tag_server"])).tags == ["tag:server"]
        assert await store.verify_api_key(keys["api_key"]) is not None
        # New rows continue after Headscale's ids (the sequences were moved on).
        carol = await store.create_user("carol")
        assert carol.id > alice.id
    finally:
        await db.close()
    conn = await asyncpg.connect(**_asyncpg(settings))
    try:
        backup = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema LIKE 'headscale_backup_%'"
        )
        assert {r["table_name"] for r in backup} >= {
            "migrations",
            "users",
            "nodes",
            "pre_auth_keys",
            "api_keys",
        }
        assert await conn.fetchval("SELECT count(*) FROM public.nodes") == len(recorded)
    finally:
        await conn.close()


REFUSED = {
    "newer": (
        "INSERT INTO migrations (id) VALUES ('209912312359-from-the-future')",
        "209912312359-from-the-future",
    ),
    # Found only when inserting, after Headscale's tables moved to the backup schema: all is rolled back.
    "two nodes on one address": (
        "UPDATE nodes SET ipv4 = (SELECT ipv4 FROM nodes WHERE id = 1) WHERE id = 2",
        "nodes row 2 cannot be taken over",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_unsupported_headscale_postgres_databases_are_refused_untouched(
    case: str, headscale_db: tuple[str, dict[str, object]]
) -> None:
    url, settings = headscale_db
    change, named = REFUSED[case]
    conn = await asyncpg.connect(**_asyncpg(settings))
    try:
        await conn.execute(change)
        before = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2"
        )
        with pytest.raises(UnsupportedHeadscaleDatabase, match=named):
            await Database.open_url(url)
        after = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2"
        )
        assert after == before
    finally:
        await conn.close()
