"""Taking over a Headscale database (v0.26 to v0.29.2, SQLite or PostgreSQL) at start, in place.

An operator stops Headscale and starts pyheadscale on the same config: `Database.open` finds Headscale's
tables (its `migrations` table and no `alembic_version` of ours) and converts them, so every node keeps its
keys, IPs and owner and every key made under Headscale keeps working. The steps, before anything is served:

1. identify: which release wrote it (pyheadscale.db.headscale_versions) and whether every column we read is
   there. A newer or stranger database is refused with a message naming what was found, untouched;
2. back up: SQLite is copied whole (SQLite's online backup) next to the database file; on PostgreSQL
   Headscale's tables are moved, untouched, into a schema of their own (`headscale_backup_<time>`);
3. convert, in one transaction: read every row into our records, drop (SQLite) or move away (PostgreSQL)
   Headscale's tables, create ours through our Alembic migrations and insert the records with their ids.
   Any failure rolls all of it back and names the row.

What Headscale's columns mean, and how each becomes ours, is in the `_user`, `_preauth_key`, `_api_key` and
`_node` readers below (Headscale's types in hscontrol/types, their text forms in its gorm serializers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import json
import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, insert, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from pyheadscale.auth import secret_keys
from pyheadscale.db import schema
from pyheadscale.db.headscale_versions import UnsupportedHeadscaleDatabase, release_of
from pyheadscale.tailkey import DiscoPublic, InvalidKeyError, MachinePublic, NodePublic

log = logging.getLogger("pyheadscale.db")

_TABLES = ("nodes", "pre_auth_keys", "api_keys", "policies", "users", "migrations", "database_versions")
"""Headscale's tables, in an order that drops referencing tables first."""
_REQUIRED_COLUMNS = {
    "users": {"id", "name", "display_name", "email", "provider_identifier", "provider", "created_at"},
    "pre_auth_keys": {"id", "key", "user_id", "reusable", "ephemeral", "used", "tags", "expiration"},
    "api_keys": {"id", "prefix", "hash", "expiration"},
    "nodes": {
        "id",
        "machine_key",
        "node_key",
        "disco_key",
        "endpoints",
        "host_info",
        "ipv4",
        "ipv6",
        "hostname",
        "given_name",
        "user_id",
        "register_method",
        "auth_key_id",
        "expiry",
        "last_seen",
        "approved_routes",
    },
    "policies": {"id", "data"},
}
_OURS = {"users", "nodes", "pre_auth_keys", "api_keys", "policies"}


@dataclasses.dataclass(frozen=True, slots=True)
class FoundHeadscale:
    """A Headscale database as identified: its release and the columns each of its tables has."""

    release: str
    columns: dict[str, frozenset[str]]
    leftovers: tuple[str, ...]
    """Tables older Headscale migrations left behind (`nodes_old`...): backed up, removed with the rest."""


@dataclasses.dataclass(slots=True)
class Converted:
    """Headscale's rows as rows of our tables, with their ids."""

    users: list[dict[str, Any]]
    preauth_keys: list[dict[str, Any]]
    api_keys: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    policies: list[dict[str, Any]]


def identify(conn: Connection) -> FoundHeadscale | None:
    """The Headscale database behind `conn`; None if it is ours or empty; UnsupportedHeadscaleDatabase if it
    is Headscale's but not one we take over (or neither ours nor Headscale's). Reads only."""
    inspector = inspect(conn)
    tables = set(inspector.get_table_names())
    if "alembic_version" in tables:
        if "migrations" in tables:
            raise UnsupportedHeadscaleDatabase(
                "the database has both pyheadscale's alembic_version and Headscale's migrations table; "
                "refusing to guess whose it is"
            )
        return None
    if "migrations" not in tables:
        clash = sorted(tables & _OURS)
        if clash:
            raise UnsupportedHeadscaleDatabase(
                f"the database has table(s) {', '.join(clash)} but neither pyheadscale's alembic_version nor "
                "Headscale's migrations table: it was not written by pyheadscale or Headscale v0.26+"
            )
        return None
    ids = {str(row[0]) for row in conn.execute(text("SELECT id FROM migrations"))}
    recorded = None
    if "database_versions" in tables:
        row = conn.execute(text("SELECT version FROM database_versions WHERE id = 1")).first()
        recorded = None if row is None else str(row[0])
    release = release_of(ids, recorded)
    columns: dict[str, frozenset[str]] = {}
    for table, required in _REQUIRED_COLUMNS.items():
        if table not in tables:
            raise UnsupportedHeadscaleDatabase(f"the Headscale {release} database has no {table} table")
        have = frozenset(c["name"] for c in inspector.get_columns(table))
        missing = sorted(required - have)
        if "nodes" == table and not have & {"tags", "forced_tags"}:
            missing.append("tags")
        if missing:
            raise UnsupportedHeadscaleDatabase(
                f"the Headscale {release} database's {table} table lacks column(s) {', '.join(missing)}"
            )
        columns[table] = have
    leftovers = tuple(sorted(t for t in tables if t.endswith("_old") and t.removesuffix("_old") in _OURS))
    return FoundHeadscale(release, columns, leftovers)


async def take_over_if_headscale(
    url: str, run_migrations: Callable[[Connection], None], **engine_options: Any
) -> None:
    """Convert the database at `url` if it is Headscale's (see the module docstring); else do nothing.

    `engine_options` are the ones the server connects with (PostgreSQL's TLS and pool settings)."""
    engine = create_async_engine(url, **engine_options)
    sqlite = url.startswith("sqlite")
    if sqlite:
        # pysqlite would commit around DDL on its own; this makes the whole conversion one real transaction.
        @event.listens_for(engine.sync_engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=5000")  # Headscale still running: wait, then say so
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

    try:
        async with engine.connect() as conn:
            found = await conn.run_sync(identify)
        if found is None:
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        if sqlite:
            backup = await asyncio.to_thread(_sqlite_backup, Path(make_url(url).database or ""), found, stamp)
            where = str(backup)
        else:
            where = f"schema headscale_backup_{stamp}"
        try:
            async with engine.begin() as conn:
                counts = await conn.run_sync(_convert, found, run_migrations, None if sqlite else stamp)
        except OperationalError as exc:
            if sqlite and "locked" in str(exc.orig):
                raise UnsupportedHeadscaleDatabase(
                    "the Headscale database is locked by another program: stop Headscale first"
                ) from exc
            raise
    finally:
        await engine.dispose()
    log.warning(
        "took over a Headscale %s database: %s; Headscale's original is kept as %s",
        found.release,
        ", ".join(f"{n} {what}" for what, n in counts.items()),
        where,
    )


def _sqlite_backup(path: Path, found: FoundHeadscale, stamp: str) -> Path:
    """A consistent copy of the whole database file (SQLite's online backup, WAL included)."""
    target = path.with_name(f"{path.name}.headscale-{found.release}-{stamp}.backup")
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()
    return target


def _convert(
    conn: Connection,
    found: FoundHeadscale,
    run_migrations: Callable[[Connection], None],
    pg_stamp: str | None,
) -> dict[str, int]:
    if identify(conn) != found:  # written to between the backup and the lock: the backup would be stale
        raise UnsupportedHeadscaleDatabase("the Headscale database changed while it was being backed up")
    records = _read_all(conn, found)
    old_tables = [*_TABLES, *found.leftovers]
    present = set(inspect(conn).get_table_names())
    if pg_stamp is None:
        for name in [*found.leftovers, *_TABLES]:
            if name in present:
                conn.exec_driver_sql(f'DROP TABLE "{name}"')
    else:
        backup = f"headscale_backup_{pg_stamp}"
        conn.exec_driver_sql(f'CREATE SCHEMA "{backup}"')
        for name in old_tables:
            if name in present:
                conn.exec_driver_sql(f'ALTER TABLE "{name}" SET SCHEMA "{backup}"')
    run_migrations(conn)
    targets = (
        (schema.users, records.users),
        (schema.pre_auth_keys, records.preauth_keys),
        (schema.api_keys, records.api_keys),
        (schema.nodes, records.nodes),
        (schema.policies, records.policies),
    )
    for table, rows in targets:
        for row in rows:
            try:
                with conn.begin_nested():
                    conn.execute(insert(table).values(**row))
            except IntegrityError as exc:
                raise UnsupportedHeadscaleDatabase(
                    f"Headscale's {table.name} row {row['id']} cannot be taken over: {exc.orig}"
                ) from exc
        if pg_stamp is not None:
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
            )
    return {
        "users": len(records.users),
        "nodes": len(records.nodes),
        "preauth keys": len(records.preauth_keys),
        "API keys": len(records.api_keys),
        "policy versions": len(records.policies),
    }


def _read_all(conn: Connection, found: FoundHeadscale) -> Converted:
    def rows(table: str, where: str = "") -> list[dict[str, Any]]:
        query = f"SELECT * FROM {table}{where} ORDER BY id"
        return [dict(r._mapping) for r in conn.execute(text(query))]

    soft_deleted = " WHERE deleted_at IS NULL"
    users = [_user(r) for r in rows("users", soft_deleted if "deleted_at" in found.columns["users"] else "")]
    preauth_keys = [_preauth_key(r) for r in rows("pre_auth_keys")]
    user_ids = {u["id"] for u in users}
    key_by_id = {k["id"]: k for k in preauth_keys}
    # Keys of a user Headscale soft-deleted lose their user (ON DELETE SET NULL), as after a hard delete.
    for key in preauth_keys:
        if key["user_id"] not in user_ids:
            key["user_id"] = None
    nodes = [_node(r, key_by_id, user_ids) for r in rows("nodes")]
    _make_given_names_unique(nodes)
    policy_where = soft_deleted if "deleted_at" in found.columns["policies"] else ""
    policies = [_policy(r) for r in rows("policies", policy_where) if (r.get("data") or "").strip()]
    return Converted(users, preauth_keys, [_api_key(r) for r in rows("api_keys")], nodes, policies)


# ---- one reader per Headscale record ----


def _user(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": int(r["id"]),
        "name": r["name"] or "",
        "display_name": r["display_name"] or "",
        "email": r["email"] or "",
        "provider": r["provider"] or "",
        "provider_id": r["provider_identifier"] or None,
        "profile_pic_url": r.get("profile_pic_url") or "",
        "created_at": _time(r["created_at"], "users", r["id"]) or datetime.now(UTC),
    }


def _preauth_key(r: dict[str, Any]) -> dict[str, Any]:
    """Since v0.28 a key is `hskey-auth-<prefix>-<secret>` with a bcrypt hash of the secret (columns prefix,
    hash); before, the whole key sat in clear in `key`. We keep the bcrypt hash, and hash a clear one."""
    prefix, stored = r.get("prefix") or "", r.get("hash")
    if prefix and stored:
        secret_hash = _bytes(stored)
    elif r["key"]:
        clear = str(r["key"])
        legacy_prefix = secret_keys.legacy_preauth_prefix(clear)
        if legacy_prefix is None:
            raise UnsupportedHeadscaleDatabase(f"Headscale's pre_auth_keys row {r['id']} has a malformed key")
        prefix, secret_hash = legacy_prefix, hashlib.sha256(clear.encode()).digest()
    else:
        raise UnsupportedHeadscaleDatabase(
            f"Headscale's pre_auth_keys row {r['id']} has neither a key nor a hash"
        )
    return {
        "id": int(r["id"]),
        "prefix": prefix,
        "secret_hash": secret_hash,
        "user_id": r["user_id"],
        "reusable": _bool(r["reusable"]),
        "ephemeral": _bool(r["ephemeral"]),
        "used": _bool(r["used"]),
        "tags": _json_list(r["tags"], "pre_auth_keys", r["id"], "tags"),
        "created_at": _time(r.get("created_at"), "pre_auth_keys", r["id"]) or datetime.now(UTC),
        "expiration": _time(r["expiration"], "pre_auth_keys", r["id"]),
    }


def _api_key(r: dict[str, Any]) -> dict[str, Any]:
    """An API key: prefix in clear, bcrypt hash of the secret (either text form, see auth/secret_keys)."""
    if not r["prefix"] or not r["hash"]:
        raise UnsupportedHeadscaleDatabase(f"Headscale's api_keys row {r['id']} has no prefix or hash")
    return {
        "id": int(r["id"]),
        "prefix": str(r["prefix"]),
        "secret_hash": _bytes(r["hash"]),
        "created_at": _time(r.get("created_at"), "api_keys", r["id"]) or datetime.now(UTC),
        "expiration": _time(r["expiration"], "api_keys", r["id"]),
        "last_seen": _time(r.get("last_seen"), "api_keys", r["id"]),
    }


def _key_text(
    kind: type[MachinePublic] | type[NodePublic] | type[DiscoPublic], r: dict[str, Any], column: str
) -> str:
    """A key column in our canonical text form. A malformed key refuses the database, naming the problem
    but not the key."""
    try:
        return kind.from_text(r[column]).text
    except InvalidKeyError as exc:
        raise UnsupportedHeadscaleDatabase(
            f"Headscale's nodes row {r['id']} has a malformed {column}: {exc}"
        ) from None


def _node(r: dict[str, Any], keys: dict[int, dict[str, Any]], user_ids: set[int]) -> dict[str, Any]:
    """A node. Its tags are `tags` (v0.28+) or `forced_tags` (before); a tagged node belongs to its tags, not
    a user (Headscale v0.29 clears user_id of tagged nodes, and gives an untagged node that lost its user the
    user of its preauth key back: done here for databases of earlier releases). Headscale has no ephemeral
    column: a node is ephemeral when its key is. Keys, endpoints and hostinfo share our text and JSON forms.
    """
    node_id = r["id"]
    if not r["machine_key"] or not r["node_key"]:
        raise UnsupportedHeadscaleDatabase(f"Headscale's nodes row {node_id} has no machine or node key")
    tags = _json_list(r.get("tags", r.get("forced_tags")), "nodes", node_id, "tags")
    key = keys.get(r["auth_key_id"]) if r["auth_key_id"] is not None else None
    user_id = r["user_id"]
    if tags:
        user_id = None
    elif user_id is None and key is not None:
        user_id = key["user_id"]
    if user_id is not None and user_id not in user_ids:
        raise UnsupportedHeadscaleDatabase(
            f"Headscale's node {node_id} ({r['hostname']}) belongs to user {user_id}, who is deleted"
        )
    hostinfo = _json(r["host_info"], dict, "nodes", node_id, "host_info")
    created = _time(r.get("created_at"), "nodes", node_id) or datetime.now(UTC)
    return {
        "id": int(node_id),
        "machine_key": _key_text(MachinePublic, r, "machine_key"),
        "node_key": _key_text(NodePublic, r, "node_key"),
        "disco_key": _key_text(DiscoPublic, r, "disco_key") if r["disco_key"] else "",
        "hostname": r["hostname"] or "",
        "given_name": r["given_name"] or r["hostname"] or f"node-{node_id}",
        "user_id": user_id,
        "tags": tags,
        "ipv4": _address(r["ipv4"], ipaddress.IPv4Address, node_id),
        "ipv6": _address(r["ipv6"], ipaddress.IPv6Address, node_id),
        "endpoints": _json_list(r["endpoints"], "nodes", node_id, "endpoints"),
        "hostinfo": hostinfo,
        "register_method": r["register_method"] or ("authkey" if key is not None else "cli"),
        "auth_key_id": key["id"] if key is not None else None,
        "ephemeral": bool(key and key["ephemeral"]),
        "expiry": _time(r["expiry"], "nodes", node_id),
        "last_seen": _time(r["last_seen"], "nodes", node_id),
        "approved_routes": _json_list(r["approved_routes"], "nodes", node_id, "approved_routes"),
        "created_at": created,
        "updated_at": _time(r.get("updated_at"), "nodes", node_id) or created,
    }


def _policy(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": int(r["id"]),
        "data": str(r["data"]),
        "created_at": _time(r.get("created_at"), "policies", r["id"]) or datetime.now(UTC),
    }


def _make_given_names_unique(nodes: list[dict[str, Any]]) -> None:
    """Headscale's given_name index is not unique in every release; ours is. A repeat gets `-<id>` added."""
    taken: set[str] = set()
    for node in nodes:
        name = node["given_name"][:63]
        if name in taken:
            name = f"{name[: 62 - len(str(node['id']))]}-{node['id']}"
            log.warning(
                "Headscale node %d shares its name %r; renamed %r", node["id"], node["given_name"], name
            )
        taken.add(name)
        node["given_name"] = name


# ---- Headscale's column encodings ----


def _time(value: Any, table: str, row_id: Any) -> datetime | None:
    """A gorm time: a datetime (PostgreSQL) or text (SQLite). Go's zero time, which releases before v0.28
    wrote for "none", is None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        stamp = value
    else:
        raw = str(value).strip()
        try:
            stamp = datetime.fromisoformat(raw.replace(" +0000 UTC", "+00:00"))
        except ValueError:
            raise UnsupportedHeadscaleDatabase(
                f"Headscale's {table} row {row_id} has an unreadable time {raw[:40]!r}"
            ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return None if stamp.year < 1900 else stamp


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "t", "true")
    return bool(value)


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def _json(value: Any, kind: type, table: str, row_id: Any, column: str) -> Any:
    """A gorm JSON-serialized column; absent, empty or `null` reads as an empty `kind`."""
    if value is None or (isinstance(value, str | bytes) and value.strip() in ("", "null", b"", b"null")):
        return kind()
    try:
        decoded = json.loads(value)
    except ValueError:
        raise UnsupportedHeadscaleDatabase(
            f"Headscale's {table} row {row_id} has unreadable {column}"
        ) from None
    if decoded is None:
        return kind()
    if not isinstance(decoded, kind):
        raise UnsupportedHeadscaleDatabase(
            f"Headscale's {table} row {row_id} has {column} of JSON type {type(decoded).__name__}"
        )
    return decoded


def _json_list(value: Any, table: str, row_id: Any, column: str) -> list[str]:
    items = _json(value, list, table, row_id, column)
    if not all(isinstance(item, str) for item in items):
        raise UnsupportedHeadscaleDatabase(f"Headscale's {table} row {row_id} has non-text items in {column}")
    return list(items)


def _address(
    value: Any, kind: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address], row_id: Any
) -> str | None:
    if not value:
        return None
    try:
        return str(kind(str(value)))
    except ValueError:
        raise UnsupportedHeadscaleDatabase(
            f"Headscale's node {row_id} has a malformed address {value!r}"
        ) from None
