"""offline stand-in: the objects, sessions, form nonces, idempotency keys and event outbox of
offline mode's stateful portal simulator (DESIGN.md section 11).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 06:30:43.508976
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

import portal_service.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "offline_form_nonces",
        sa.Column("nonce", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("session_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("created", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_offline_form_nonces")),
    )
    with op.batch_alter_table("offline_form_nonces", schema=None) as batch_op:
        batch_op.create_index("ix_offline_form_nonces_session_id", ["session_id"], unique=False)

    op.create_table(
        "offline_idempotency_keys",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("request_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("object_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("created", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_offline_idempotency_keys")),
    )
    op.create_table(
        "offline_objects",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("customer_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column(
            "object",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_objects")),
    )
    with op.batch_alter_table("offline_objects", schema=None) as batch_op:
        batch_op.create_index("ix_offline_objects_kind_created", ["kind", "created"], unique=False)
        batch_op.create_index(
            "ix_offline_objects_kind_customer_id", ["kind", "customer_id"], unique=False
        )

    op.create_table(
        "offline_outbox",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column(
            "event",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("delivered_at", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_offline_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_offline_outbox_event_id")),
    )
    with op.batch_alter_table("offline_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_offline_outbox_delivered_at_seq", ["delivered_at", "seq"], unique=False
        )

    op.create_table(
        "offline_sessions",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("replay_token", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("idempotency_key", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("request_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("customer_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column(
            "session",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("csrf_token", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_activity", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_sessions")),
    )
    with op.batch_alter_table("offline_sessions", schema=None) as batch_op:
        batch_op.create_index(
            "uq_offline_sessions_idempotency_key",
            ["idempotency_key"],
            unique=True,
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
        )
        batch_op.create_index("uq_offline_sessions_token_hash", ["token_hash"], unique=True)

    op.create_table(
        "offline_secrets",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("value", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("created", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_offline_secrets")),
    )


def downgrade() -> None:
    op.drop_table("offline_secrets")
    with op.batch_alter_table("offline_sessions", schema=None) as batch_op:
        batch_op.drop_index("uq_offline_sessions_token_hash")
        batch_op.drop_index(
            "uq_offline_sessions_idempotency_key",
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
        )

    op.drop_table("offline_sessions")
    with op.batch_alter_table("offline_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_offline_outbox_delivered_at_seq")

    op.drop_table("offline_outbox")
    with op.batch_alter_table("offline_objects", schema=None) as batch_op:
        batch_op.drop_index("ix_offline_objects_kind_customer_id")
        batch_op.drop_index("ix_offline_objects_kind_created")

    op.drop_table("offline_objects")
    op.drop_table("offline_idempotency_keys")
    with op.batch_alter_table("offline_form_nonces", schema=None) as batch_op:
        batch_op.drop_index("ix_offline_form_nonces_session_id")

    op.drop_table("offline_form_nonces")
