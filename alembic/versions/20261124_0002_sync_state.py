"""sync_state: per-kind progress of `portal-service sync`, for `--resume` (DESIGN.md section 5).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 23:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import portal_service.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sync_state",
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("cursor", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("started_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kind", name=op.f("pk_sync_state")),
    )


def downgrade() -> None:
    op.drop_table("sync_state")
