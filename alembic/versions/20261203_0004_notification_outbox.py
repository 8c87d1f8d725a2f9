"""notifications + notification_clocks: the outbox of access.changed (DESIGN.md section 11).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 06:32:34.526964
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

import portal_service.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# JSONB on PostgreSQL, JSON elsewhere (as portal_service.db.JSONType).
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "notification_clocks",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("scanned_until", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_notification_clocks")),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("customer_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("app_user_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("since", JSON_TYPE, nullable=False),
        sa.Column("current", JSON_TYPE, nullable=False),
        sa.Column("previous", JSON_TYPE, nullable=True),
        sa.Column("changed_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("give_up_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("delivered_at", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint(
            "livemode", "customer_id", "seq", name=op.f("uq_notifications_livemode")
        ),
    )
    op.create_index(
        "ix_notifications_created_at", "notifications", ["created_at", "id"], unique=False
    )
    op.create_index(
        "ix_notifications_status_next_attempt_at",
        "notifications",
        ["status", "next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_status_next_attempt_at", table_name="notifications")
    op.drop_index("ix_notifications_created_at", table_name="notifications")
    op.drop_table("notifications")
    op.drop_table("notification_clocks")
