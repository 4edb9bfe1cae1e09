"""The first schema: users, preauth keys, nodes, API keys, policies.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(512), nullable=True, unique=True),
        sa.Column("profile_pic_url", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "pre_auth_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("prefix", sa.String(32), nullable=False, unique=True),
        sa.Column("secret_hash", sa.LargeBinary, nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("reusable", sa.Boolean, nullable=False),
        sa.Column("ephemeral", sa.Boolean, nullable=False),
        sa.Column("used", sa.Boolean, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expiration", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("machine_key", sa.String(80), nullable=False, unique=True),
        sa.Column("node_key", sa.String(80), nullable=False, unique=True),
        sa.Column("disco_key", sa.String(80), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("given_name", sa.String(63), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("ipv4", sa.String(15), nullable=True, unique=True),
        sa.Column("ipv6", sa.String(39), nullable=True, unique=True),
        sa.Column("endpoints", sa.JSON, nullable=False),
        sa.Column("hostinfo", sa.JSON, nullable=False),
        sa.Column("register_method", sa.String(32), nullable=False),
        sa.Column(
            "auth_key_id", sa.Integer, sa.ForeignKey("pre_auth_keys.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("ephemeral", sa.Boolean, nullable=False),
        sa.Column("expiry", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approved_routes", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("prefix", sa.String(32), nullable=False, unique=True),
        sa.Column("secret_hash", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expiration", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("policies", "api_keys", "nodes", "pre_auth_keys", "users"):
        op.drop_table(table)
