"""The database schema, as SQLAlchemy Core tables. Alembic migrations create and evolve it."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("display_name", String(255), nullable=False, default=""),
    Column("email", String(255), nullable=False, default=""),
    Column("provider", String(64), nullable=False, default=""),
    Column("provider_id", String(512), nullable=True, unique=True),
    Column("profile_pic_url", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

pre_auth_keys = Table(
    "pre_auth_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("reusable", Boolean, nullable=False, default=False),
    Column("ephemeral", Boolean, nullable=False, default=False),
    Column("used", Boolean, nullable=False, default=False),
    Column("tags", JSON, nullable=False, default=list),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expiration", DateTime(timezone=True), nullable=True),
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("machine_key", String(80), nullable=False, unique=True),
    Column("node_key", String(80), nullable=False, unique=True),
    Column("disco_key", String(80), nullable=False, default=""),
    Column("hostname", String(255), nullable=False, default=""),
    Column("given_name", String(63), nullable=False, unique=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    Column("tags", JSON, nullable=False, default=list),
    Column("ipv4", String(15), nullable=True, unique=True),
    Column("ipv6", String(39), nullable=True, unique=True),
    Column("endpoints", JSON, nullable=False, default=list),
    Column("hostinfo", JSON, nullable=False, default=dict),
    Column("register_method", String(32), nullable=False, default="authkey"),
    Column("auth_key_id", Integer, ForeignKey("pre_auth_keys.id", ondelete="SET NULL"), nullable=True),
    Column("ephemeral", Boolean, nullable=False, default=False),
    Column("expiry", DateTime(timezone=True), nullable=True),
    Column("last_seen", DateTime(timezone=True), nullable=True),
    Column("approved_routes", JSON, nullable=False, default=list),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expiration", DateTime(timezone=True), nullable=True),
    Column("last_seen", DateTime(timezone=True), nullable=True),
)

policies = Table(
    "policies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("data", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
