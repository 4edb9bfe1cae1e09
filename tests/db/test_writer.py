"""Writes through pyheadscale.db.writer: committed when they return, all-or-nothing, none lost at close."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert

from pyheadscale.db import schema
from pyheadscale.db.database import Database
from pyheadscale.db.writer import AsyncEngineWriter, SqliteThreadWriter
from pyheadscale.state.models import Node, PreAuthKey, User


def user(name: str) -> User:
    return User(id=0, name=name, created_at=datetime.now(UTC))


def node(i: int, user_id: int) -> Node:
    stamp = datetime.now(UTC)
    return Node(
        id=0,
        machine_key=f"mkey:{i:064x}",
        node_key=f"nodekey:{i:064x}",
        hostname=f"n{i}",
        given_name=f"n{i}",
        user_id=user_id,
        hostinfo={"Hostname": f"n{i}"},
        created_at=stamp,
        updated_at=stamp,
        last_seen=stamp,
    )


def rows(path: Path, query: str) -> list[tuple[object, ...]]:
    """What another connection (a restarted server, say) reads from the file right now."""
    with sqlite3.connect(path) as conn:
        return conn.execute(query).fetchall()


async def test_a_registration_is_committed_with_its_key_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    db = await Database.open_url(f"sqlite+aiosqlite:///{path}")
    try:
        assert isinstance(db.writer, SqliteThreadWriter)
        uid = await db.insert_user(user("alice"))
        unsaved = PreAuthKey(0, "abc", b"hash", uid, created_at=datetime.now(UTC))
        key = replace(unsaved, id=await db.insert_preauth_key(unsaved))
        node_id = await db.register_node(node(1, uid), key)
        assert rows(path, "SELECT id, hostname, user_id FROM nodes") == [(node_id, "n1", uid)]
        assert rows(path, "SELECT used FROM pre_auth_keys") == [(1,)]
        await db.update_node_fields(node_id, hostname="renamed", endpoints=["192.0.2.1:41641"])
        assert rows(path, "SELECT hostname, endpoints FROM nodes") == [("renamed", '["192.0.2.1:41641"]')]
        await db.delete_node(node_id)
        assert rows(path, "SELECT id FROM nodes") == []
    finally:
        await db.close()


async def test_a_failed_write_leaves_nothing_behind_and_the_next_one_commits(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    db = await Database.open_url(f"sqlite+aiosqlite:///{path}")
    try:
        uid = await db.insert_user(user("alice"))
        await db.register_node(node(1, uid), None)
        clash = replace(node(2, uid), machine_key=node(1, uid).machine_key)
        with pytest.raises(Exception, match=r"UNIQUE constraint failed: nodes\.machine_key"):
            await db.register_node(clash, None)

        def half_then_fail(conn: Connection) -> None:
            conn.execute(insert(schema.users), {"name": "bob", "created_at": datetime.now(UTC)})
            raise RuntimeError("failed after the first statement")

        with pytest.raises(RuntimeError, match="after the first statement"):
            await db.writer.run(half_then_fail)
        assert rows(path, "SELECT name FROM users") == [("alice",)]
        await db.register_node(node(3, uid), None)
        assert rows(path, "SELECT hostname FROM nodes ORDER BY id") == [("n1",), ("n3",)]
    finally:
        await db.close()


async def test_writes_in_flight_at_close_are_all_committed(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    db = await Database.open_url(f"sqlite+aiosqlite:///{path}")
    uid = await db.insert_user(user("alice"))
    writes = [asyncio.ensure_future(db.register_node(node(i, uid), None)) for i in range(50)]
    await asyncio.sleep(0)  # every write handed to the writer, none finished
    await db.close()
    ids = await asyncio.gather(*writes)
    assert sorted(ids) == list(range(1, 51))
    assert rows(path, "SELECT COUNT(*) FROM nodes") == [(50,)]
    reopened = await Database.open_url(f"sqlite+aiosqlite:///{path}")
    try:
        assert len((await reopened.load()).nodes) == 50
    finally:
        await reopened.close()


async def test_an_in_memory_database_is_written_on_its_own_engine() -> None:
    """A second engine on `:memory:` would be a second, empty database: writes must land where reads look."""
    db = await Database.open_url("sqlite+aiosqlite:///:memory:")
    try:
        assert isinstance(db.writer, AsyncEngineWriter)
        uid = await db.insert_user(user("alice"))
        await db.register_node(node(1, uid), None)
        snapshot = await db.load()
        assert [u.name for u in snapshot.users] == ["alice"]
        assert [n.hostname for n in snapshot.nodes] == ["n1"]
    finally:
        await db.close()
