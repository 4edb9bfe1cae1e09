"""Async persistence for the store's records (SQLite by default, PostgreSQL by configuration).

The database is written through, never read on the hot path: at start the store loads everything once, and
from then on every state change is written here before it is acknowledged to a client. A crash (even SIGKILL)
therefore loses nothing a client was told had happened.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, bindparam, delete, event, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pyheadscale.config import Config
from pyheadscale.db import schema
from pyheadscale.db.headscale_import import take_over_if_headscale
from pyheadscale.db.writer import Writer, sqlite_pragmas, writer_for
from pyheadscale.state.models import ApiKey, Node, PreAuthKey, User
from pyheadscale.tailcfg.hostinfo import bound_stored_hostinfo

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def database_url(config: Config) -> str:
    db = config.database
    if db.type == "postgres":
        return db.postgres.url().render_as_string(hide_password=False)
    path = config.path(db.sqlite.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{path}"


def _run_migrations(connection: Connection) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _to_row(record: Any) -> dict[str, Any]:
    """A record's columns. Records are frozen and their lists and dicts never change in place (a change is a
    new record), so the row shares them rather than deep-copying them as `dataclasses.asdict` does (which was
    some 7% of a registration's CPU)."""
    row = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    for key in ("ipv4", "ipv6"):
        if key in row and row[key] is not None:
            row[key] = str(row[key])
    return row


def _user(row: Any) -> User:
    m = row._mapping
    return User(
        id=m["id"],
        name=m["name"],
        display_name=m["display_name"],
        email=m["email"],
        provider=m["provider"],
        provider_id=m["provider_id"] or "",
        profile_pic_url=m["profile_pic_url"],
        created_at=_utc(m["created_at"]),
    )


def _preauth_key(row: Any) -> PreAuthKey:
    m = row._mapping
    return PreAuthKey(
        id=m["id"],
        prefix=m["prefix"],
        secret_hash=m["secret_hash"],
        user_id=m["user_id"],
        reusable=m["reusable"],
        ephemeral=m["ephemeral"],
        used=m["used"],
        tags=list(m["tags"] or []),
        created_at=_utc(m["created_at"]),
        expiration=_utc(m["expiration"]),
    )


def _node(row: Any) -> Node:
    m = row._mapping
    return Node(
        id=m["id"],
        machine_key=m["machine_key"],
        node_key=m["node_key"],
        disco_key=m["disco_key"],
        hostname=m["hostname"],
        given_name=m["given_name"],
        user_id=m["user_id"],
        tags=list(m["tags"] or []),
        ipv4=ipaddress.IPv4Address(m["ipv4"]) if m["ipv4"] else None,
        ipv6=ipaddress.IPv6Address(m["ipv6"]) if m["ipv6"] else None,
        endpoints=list(m["endpoints"] or []),
        hostinfo=bound_stored_hostinfo(m["hostinfo"] or {}),
        register_method=m["register_method"],
        auth_key_id=m["auth_key_id"],
        ephemeral=m["ephemeral"],
        expiry=_utc(m["expiry"]),
        last_seen=_utc(m["last_seen"]),
        approved_routes=list(m["approved_routes"] or []),
        created_at=_utc(m["created_at"]),
        updated_at=_utc(m["updated_at"]),
    )


@dataclasses.dataclass(slots=True)
class Snapshot:
    """Everything the store needs at start."""

    users: list[User]
    preauth_keys: list[PreAuthKey]
    nodes: list[Node]


class Database:
    """Write-through persistence. Every method runs in its own transaction; writes go through `writer`
    (pyheadscale.db.writer), reads through the async engine."""

    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self.engine = engine
        self.writer = writer

    @classmethod
    async def open(cls, config: Config) -> Database:
        postgres = config.database.type == "postgres"
        options = config.database.postgres.engine_options() if postgres else {}
        return await cls.open_url(database_url(config), **options)

    @classmethod
    async def open_url(cls, url: str, **engine_options: Any) -> Database:
        """Open a database by URL (tests use in-memory or temporary SQLite files), taking over a Headscale
        database found there first (pyheadscale.db.headscale_import)."""
        if ":memory:" not in url:
            await take_over_if_headscale(url, _run_migrations, **engine_options)
        engine = create_async_engine(url, **engine_options)
        if url.startswith("sqlite"):
            event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        async with engine.begin() as conn:
            await conn.run_sync(_run_migrations)
        return cls(engine, writer_for(url, engine))

    async def close(self) -> None:
        await self.writer.close()
        await self.engine.dispose()

    async def load(self) -> Snapshot:
        async with self.engine.connect() as conn:
            users = [_user(r) for r in await conn.execute(select(schema.users).order_by(schema.users.c.id))]
            keys = [
                _preauth_key(r)
                for r in await conn.execute(select(schema.pre_auth_keys).order_by(schema.pre_auth_keys.c.id))
            ]
            nodes = [_node(r) for r in await conn.execute(select(schema.nodes).order_by(schema.nodes.c.id))]
        return Snapshot(users, keys, nodes)

    async def insert_user(self, user: User) -> int:
        return await self._insert(schema.users, _to_row(user) | {"provider_id": user.provider_id or None})

    async def update_user(self, user: User) -> None:
        await self._update(schema.users, user.id, _to_row(user) | {"provider_id": user.provider_id or None})

    async def delete_user(self, user_id: int) -> None:
        """Delete a user and its preauth keys in one transaction (the foreign key would only orphan them)."""
        keys = schema.pre_auth_keys

        def transaction(conn: Connection) -> None:
            conn.execute(delete(keys).where(keys.c.user_id == user_id))
            conn.execute(delete(schema.users).where(schema.users.c.id == user_id))

        await self.writer.run(transaction)

    async def insert_preauth_key(self, key: PreAuthKey) -> int:
        return await self._insert(schema.pre_auth_keys, _to_row(key))

    async def update_preauth_key(self, key: PreAuthKey) -> None:
        await self._update(schema.pre_auth_keys, key.id, _to_row(key))

    async def delete_preauth_key(self, key_id: int) -> None:
        await self._delete(schema.pre_auth_keys, key_id)

    async def ping(self) -> bool:
        """Whether the database answers a trivial query (the API's health check)."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(select(1))
        except Exception:
            return False
        return True

    async def load_api_keys(self) -> list[ApiKey]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(schema.api_keys).order_by(schema.api_keys.c.id))).all()
        return [
            ApiKey(
                id=r.id,
                prefix=r.prefix,
                secret_hash=r.secret_hash,
                created_at=_utc(r.created_at),
                expiration=_utc(r.expiration),
                last_seen=_utc(r.last_seen),
            )
            for r in rows
        ]

    async def insert_api_key(self, key: ApiKey) -> int:
        return await self._insert(schema.api_keys, _to_row(key))

    async def update_api_key(self, key: ApiKey) -> None:
        await self._update(schema.api_keys, key.id, _to_row(key))

    async def delete_api_key(self, key_id: int) -> None:
        await self._delete(schema.api_keys, key_id)

    async def update_node(self, node: Node) -> None:
        await self._update(schema.nodes, node.id, _to_row(node))

    async def update_node_fields(self, node_id: int, **values: Any) -> None:
        await self._update(schema.nodes, node_id, values)

    async def delete_node(self, node_id: int) -> None:
        await self._delete(schema.nodes, node_id)

    async def register_node(self, node: Node, used_key: PreAuthKey | None) -> int:
        """Insert a new node and mark its single-use key used, in one transaction."""
        row = _to_row(node)
        row.pop("id")

        def transaction(conn: Connection) -> int:
            node_id = _inserted_id(conn, schema.nodes, row)
            if used_key is not None:
                conn.execute(_update_by_id(schema.pre_auth_keys), {"row_id": used_key.id, "used": True})
            return node_id

        return await self.writer.run(transaction)

    async def _insert(self, table: Any, row: dict[str, Any]) -> int:
        row = dict(row)
        if row.get("id") in (0, None):
            row.pop("id", None)
        return await self.writer.run(lambda conn: _inserted_id(conn, table, row))

    async def _update(self, table: Any, row_id: int, values: dict[str, Any]) -> None:
        values = {k: v for k, v in values.items() if k != "id"} | {"row_id": row_id}
        await self.writer.run(lambda conn: conn.execute(_update_by_id(table), values))

    async def _delete(self, table: Any, row_id: int) -> None:
        await self.writer.run(lambda conn: conn.execute(delete(table).where(table.c.id == row_id)))

    async def latest_policy(self) -> str | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(schema.policies.c.data).order_by(schema.policies.c.id.desc()).limit(1)
                )
            ).first()
        return None if row is None else str(row[0])

    async def save_policy(self, data: str) -> None:
        row = {"data": data, "created_at": datetime.now(UTC)}
        await self.writer.run(lambda conn: conn.execute(insert(schema.policies), row))


# Statements with their values as parameters: SQLAlchemy compiles each once and caches it, where
# `.values(...)` with the values themselves builds and checks a new statement per write.


def _inserted_id(conn: Connection, table: Any, row: dict[str, Any]) -> int:
    return int(conn.execute(insert(table), row).inserted_primary_key[0])  # type: ignore[index]


def _update_by_id(table: Any) -> Any:
    """UPDATE of the row whose id is the parameter `row_id`, setting the columns the parameters name."""
    return update(table).where(table.c.id == bindparam("row_id"))
