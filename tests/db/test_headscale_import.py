"""Taking over databases real Headscale made (fixtures/headscale-*, recorded by
tests/e2e/headscale_takeover_driver.py --record): everything carries over, keys made by Headscale keep
working, and a database newer or stranger than supported is refused with a message naming it, byte for byte
unchanged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyheadscale.db.database import Database
from pyheadscale.db.headscale_versions import UnsupportedHeadscaleDatabase
from pyheadscale.state.errors import AuthFailed
from pyheadscale.state.ipalloc import IPAllocator
from pyheadscale.state.store import Store

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
RECORDED = sorted(p.name for p in FIXTURES.glob("headscale-v*") if (p / "db.sqlite").exists())


def fixture(name: str) -> Path:
    return FIXTURES / name


def copy_db(name: str, tmp_path: Path) -> Path:
    target = tmp_path / "db.sqlite"
    shutil.copy(fixture(name) / "db.sqlite", target)
    return target


def backups(directory: Path) -> list[Path]:
    return sorted(directory.glob("db.sqlite.headscale-*.backup"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def open_store(path: Path) -> Store:
    db = await Database.open_url(f"sqlite+aiosqlite:///{path}")
    store = Store(db, IPAllocator("100.64.0.0/10", "fd7a:115c:a1e0::/48", "sequential"))
    await store.load()
    return store


@pytest.fixture
async def taken_over(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, Path]]:
    path = copy_db(request.param, tmp_path)
    store = await open_store(path)
    try:
        yield store, path
    finally:
        await store.db.close()


def test_fixtures_are_recorded() -> None:
    assert "headscale-v0.29.2" in RECORDED, f"no recorded Headscale v0.29.2 database under {FIXTURES}"


@pytest.mark.parametrize("taken_over", RECORDED, indirect=True)
async def test_everything_carries_over(
    taken_over: tuple[Store, Path], request: pytest.FixtureRequest
) -> None:
    store, path = taken_over
    name = request.node.callspec.params["taken_over"]
    recorded: dict[str, dict[str, Any]] = json.loads((fixture(name) / "nodes.json").read_text())
    alice, bob = store.user_by_name("alice"), store.user_by_name("bob")
    assert alice is not None and bob is not None
    assert (alice.display_name, alice.email) == ("Alice Example", "alice@example.com")
    nodes = {n.hostname: n for n in store.nodes.values()}
    assert set(nodes) == set(recorded)
    for host, want in recorded.items():
        node = nodes[host]
        assert str(node.id) == want["id"]
        assert (node.machine_key, node.node_key) == (want["machine_key"], want["node_key"])
        assert sorted(a.split("/")[0] for a in node.addresses()) == want["ips"]
        assert sorted(node.tags) == want["tags"]
        assert sorted(node.approved_routes) == want["approved_routes"]
    # Field by field as Headscale stored them.
    with sqlite3.connect(fixture(name) / "db.sqlite") as source:
        source.row_factory = sqlite3.Row
        for row in source.execute("SELECT * FROM nodes"):
            node = store.nodes[row["id"]]
            assert (node.disco_key, node.given_name, node.register_method) == (
                row["disco_key"],
                row["given_name"],
                row["register_method"],
            )
            assert node.endpoints == json.loads(row["endpoints"] or "[]")
            assert (
                node.hostinfo == json.loads(row["host_info"]) and node.hostinfo["Hostname"] == node.hostname
            )
            assert node.last_seen == datetime.fromisoformat(row["last_seen"])
            # Before v0.28 Headscale wrote Go's zero time for "no expiry".
            assert node.expiry is None and (row["expiry"] or "0001-").startswith("0001-")
    source.close()
    assert nodes["nodea"].user_id == alice.id and nodes["nodeb"].user_id is None
    policy = await store.db.latest_policy()
    assert policy is not None and json.loads(policy) == json.loads(
        (fixture(name) / "policy.json").read_text()
    )
    [backup] = backups(path.parent)
    assert _tables(backup) >= {"migrations", "nodes", "users"}


@pytest.mark.parametrize("taken_over", RECORDED, indirect=True)
async def test_keys_made_by_headscale_keep_working(
    taken_over: tuple[Store, Path], request: pytest.FixtureRequest
) -> None:
    store, _ = taken_over
    keys = json.loads((fixture(request.node.callspec.params["taken_over"]) / "keys.json").read_text())
    alice = store.user_by_name("alice")
    assert alice is not None
    user_key = await store.verify_preauth_key(keys["preauth_key_alice"])
    assert user_key.user_id == alice.id and user_key.reusable
    tag_key = await store.verify_preauth_key(keys["preauth_key_tag_server"])
    assert tag_key.tags == ["tag:server"]
    assert await store.verify_api_key(keys["api_key"]) is not None
    assert store.authenticate_api_key(keys["api_key"]) is not None  # the synchronous check agrees

    def wrong(text: str) -> str:
        return text[:-1] + ("A" if text[-1] != "A" else "B")

    assert await store.verify_api_key(wrong(keys["api_key"])) is None
    with pytest.raises(AuthFailed):
        await store.verify_preauth_key(wrong(keys["preauth_key_alice"]))


@pytest.mark.parametrize("name", RECORDED)
async def test_a_second_start_is_an_ordinary_one(name: str, tmp_path: Path) -> None:
    path = copy_db(name, tmp_path)
    first = await open_store(path)
    ids = sorted(first.nodes)
    await first.db.close()
    again = await open_store(path)
    try:
        assert sorted(again.nodes) == ids
        assert len(backups(tmp_path)) == 1
        # New rows continue after Headscale's ids.
        user = await again.create_user("carol")
        assert user.id > max(u.id for u in again.users.values() if u.name != "carol")
    finally:
        await again.db.close()


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _sql(*statements: str) -> Callable[[sqlite3.Connection], None]:
    def apply(db: sqlite3.Connection) -> None:
        for statement in statements:
            db.execute(statement)

    return apply


REFUSED = {
    "newer migration": (
        _sql("INSERT INTO migrations (id) VALUES ('209912312359-from-the-future')"),
        "209912312359-from-the-future",
    ),
    "newer recorded version": (_sql("UPDATE database_versions SET version = 'v0.30.0'"), "v0.30.0"),
    "older than v0.26": (_sql("DELETE FROM migrations WHERE id = '202505141324'"), "predates v0.26"),
    "missing column": (_sql("ALTER TABLE nodes DROP COLUMN approved_routes"), "approved_routes"),
    "missing table": (_sql("DROP TABLE api_keys"), "no api_keys table"),
    "malformed address": (_sql("UPDATE nodes SET ipv4 = 'not-an-address' WHERE id = 1"), "node 1"),
    "malformed hostinfo": (_sql("UPDATE nodes SET host_info = '[1, 2' WHERE id = 2"), "nodes row 2"),
    "malformed node key": (
        _sql("UPDATE nodes SET node_key = 'nodekey:' || substr(node_key, 10) || 'zz' WHERE id = 1"),
        "nodes row 1 has a malformed node_key: a node key must have 64 hex digits after 'nodekey:', got 65",
    ),
    "a node key in the machine key column": (
        _sql("UPDATE nodes SET machine_key = node_key WHERE id = 2"),
        "nodes row 2 has a malformed machine_key: a machine key must begin with 'mkey:'",
    ),
    "malformed disco key": (
        _sql("UPDATE nodes SET disco_key = 'discokey:' || substr(disco_key, 10, 63) || 'g' WHERE id = 1"),
        "nodes row 1 has a malformed disco_key: a disco key has a character that is not a hex digit",
    ),
    # Found only when inserting, after Headscale's tables were dropped: all of it is rolled back.
    "two nodes on one address": (
        _sql("UPDATE nodes SET ipv4 = (SELECT ipv4 FROM nodes WHERE id = 1) WHERE id = 2"),
        "nodes row 2 cannot be taken over",
    ),
    "a node of a deleted user": (
        _sql("UPDATE users SET deleted_at = '2026-01-01 00:00:00+00:00' WHERE name = 'alice'"),
        "belongs to user",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_unsupported_databases_are_refused_untouched(case: str, tmp_path: Path) -> None:
    change, named = REFUSED[case]
    path = copy_db("headscale-v0.29.2", tmp_path)
    with sqlite3.connect(path) as db:
        change(db)
    db.close()
    before = digest(path)
    with pytest.raises(UnsupportedHeadscaleDatabase, match=named.replace("(", r"\(")):
        await Database.open_url(f"sqlite+aiosqlite:///{path}")
    assert digest(path) == before
    assert "alembic_version" not in _tables(path)


async def test_tables_neither_ours_nor_headscales_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id integer PRIMARY KEY, login text)")
    db.close()
    with pytest.raises(UnsupportedHeadscaleDatabase, match="table\\(s\\) users"):
        await Database.open_url(f"sqlite+aiosqlite:///{path}")


def test_serve_refuses_a_newer_database_with_one_clear_line(tmp_path: Path) -> None:
    path = copy_db("headscale-v0.29.2", tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE database_versions SET version = 'v0.31.0'")
    db.close()
    before = digest(path)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server_url": "http://127.0.0.1:1",
                "listen_addr": "127.0.0.1:0",
                "database": {"type": "sqlite", "sqlite": {"path": str(path)}},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pyheadscale", "-c", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Headscale v0.31.0, newer than v0.29.2" in proc.stderr and "Traceback" not in proc.stderr
    assert digest(path) == before


async def test_a_database_headscale_still_writes_is_refused(tmp_path: Path) -> None:
    path = copy_db("headscale-v0.29.2", tmp_path)
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # what a running Headscale holds while it writes
        with pytest.raises(UnsupportedHeadscaleDatabase, match="stop Headscale first"):
            await Database.open_url(f"sqlite+aiosqlite:///{path}")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert "alembic_version" not in _tables(path)


async def test_provider_identities_and_leftover_tables(tmp_path: Path) -> None:
    """An OIDC user keeps its provider identity; tables older Headscale migrations left behind (`*_old`) go
    with the rest into the backup."""
    path = copy_db("headscale-v0.29.2", tmp_path)
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO users (id, name, display_name, email, provider_identifier, provider, "
            "profile_pic_url, created_at) VALUES (7, 'dana', 'Dana D', 'dana@idp.example', "
            "'https://idp.example/sub-123', 'oidc', 'https://idp.example/dana.png', "
            "'2026-11-30 08:00:00.5+00:00')"
        )
        db.execute("CREATE TABLE nodes_old (id integer PRIMARY KEY, hostname text)")
    db.close()
    store = await open_store(path)
    try:
        dana = store.user_by_name("dana")
        assert dana is not None
        assert (dana.provider, dana.provider_id, dana.profile_pic_url, dana.display_name) == (
            "oidc",
            "https://idp.example/sub-123",
            "https://idp.example/dana.png",
            "Dana D",
        )
        assert dana.created_at is not None and dana.created_at.microsecond == 500_000
    finally:
        await store.db.close()
    assert "nodes_old" not in _tables(path) and "nodes_old" in _tables(backups(tmp_path)[0])


async def test_shared_given_names_and_ephemeral_keys(tmp_path: Path) -> None:
    """Headscale's given_name index is not unique everywhere, ours is: a repeat is renamed `<name>-<id>`. A
    node is ephemeral when the key it registered with is (Headscale has no column for it)."""
    path = copy_db("headscale-v0.29.2", tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE nodes SET given_name = 'nodea' WHERE id = 2")
        db.execute("UPDATE pre_auth_keys SET ephemeral = 1 WHERE id = 2")
    db.close()
    store = await open_store(path)
    try:
        assert (store.nodes[1].given_name, store.nodes[2].given_name) == ("nodea", "nodea-2")
        assert store.nodes[2].ephemeral and not store.nodes[1].ephemeral
        assert store.nodes[2].auth_key_id == 2 and store.preauth_keys[2].ephemeral
    finally:
        await store.db.close()
