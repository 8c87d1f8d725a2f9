"""Initial schema: the event inbox and every mirror table of DESIGN.md section 2.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 21:36:20.182381
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

import portal_service.db

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# JSONB on PostgreSQL, JSON elsewhere (as portal_service.db.JSONType).
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("stripe_created", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("raw", JSON_TYPE, nullable=True),
        sa.Column("source_ts", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source_event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("app_user_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column(
            "default_payment_method", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True
        ),
        sa.Column("address", JSON_TYPE, nullable=True),
        sa.Column("tax_exempt", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("preferred_locales", JSON_TYPE, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
    )
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index("ix_customers_app_user_id", ["app_user_id"], unique=False)
        batch_op.create_index(
            "uq_customers_app_user_id_live",
            ["livemode", "account", "app_user_id"],
            unique=True,
            postgresql_where=sa.text("app_user_id IS NOT NULL AND NOT deleted"),
            sqlite_where=sa.text("app_user_id IS NOT NULL AND NOT deleted"),
        )

    op.create_table(
        "entitlement_summaries",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("stripe_created", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("raw", JSON_TYPE, nullable=True),
        sa.Column("source_ts", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source_event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entitlement_summaries")),
    )
    op.create_table(
        "entitlements",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("stripe_created", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("raw", JSON_TYPE, nullable=True),
        sa.Column("source_ts", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source_event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("customer_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("feature_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("lookup_key", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entitlements")),
    )
    with op.batch_alter_table("entitlements", schema=None) as batch_op:
        batch_op.create_index("ix_entitlements_customer_id", ["customer_id"], unique=False)

    op.create_table(
        "invoices",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("stripe_created", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("raw", JSON_TYPE, nullable=True),
        sa.Column("source_ts", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source_event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("customer_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("subscription_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=True),
        sa.Column("amount_due", sa.Integer(), nullable=True),
        sa.Column("amount_paid", sa.Integer(), nullable=True),
        sa.Column("hosted_invoice_url", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("paid_at", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_invoices_customer_id_stripe_created",
            ["customer_id", "stripe_created", "id"],
            unique=False,
        )
        batch_op.create_index("ix_invoices_subscription_id", ["subscription_id"], unique=False)

    op.create_table(
        "payment_methods",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("stripe_created", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("raw", JSON_TYPE, nullable=True),
        sa.Column("source_ts", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source_event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("customer_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("card_brand", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("card_last4", sqlmodel.sql.sqltypes.AutoString(length=4), nullable=True),
        sa.Column("card_exp_month", sa.Integer(), nullable=True),
        sa.Column("card_exp_year", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_methods")),
    )
    with op.batch_alter_table("payment_methods", schema=None) as batch_op:
        batch_op.create_index("ix_payment_methods_customer_id", ["customer_id"], unique=False)

    op.create_table(
        "portal_configurations",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("stripe_created", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("raw", JSON_TYPE, nullable=True),
        sa.Column("source_ts", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source_event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("default_return_url", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("features", JSON_TYPE, nullable=True),
        sa.Column("business_profile", JSON_TYPE, nullable=True),
        sa.Column("metadata", JSON_TYPE, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_configurations")),
    )
    op.create_table(
        "portal_sessions",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("stripe_created", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("raw", JSON_TYPE, nullable=True),
        sa.Column("source_ts", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source_event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("customer_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("configuration_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("locale", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("flow_type", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("return_url", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("app_user_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("caller", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("created", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "idempotency_key_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True
        ),
        sa.Column("request_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_sessions")),
    )
    with op.batch_alter_table("portal_sessions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_portal_sessions_app_user_id_created", ["app_user_id", "created"], unique=False
        )
        batch_op.create_index("ix_portal_sessions_customer_id", ["customer_id"], unique=False)
        batch_op.create_index(
            "uq_portal_sessions_idempotency_key_hash",
            ["idempotency_key_hash"],
            unique=True,
            postgresql_where=sa.text("idempotency_key_hash IS NOT NULL"),
            sqlite_where=sa.text("idempotency_key_hash IS NOT NULL"),
        )

    op.create_table(
        "stripe_events",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("api_version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("created", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("payload", JSON_TYPE, nullable=False),
        sa.Column("received_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("processed_at", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.create_index("ix_stripe_events_created", ["created"], unique=False)
        batch_op.create_index("ix_stripe_events_received_at", ["received_at"], unique=False)
        batch_op.create_index(
            "ix_stripe_events_status_received_at", ["status", "received_at"], unique=False
        )
        batch_op.create_index(
            "ix_stripe_events_type_received_at", ["type", "received_at"], unique=False
        )

    op.create_table(
        "subscription_items",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("stripe_created", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("raw", JSON_TYPE, nullable=True),
        sa.Column("source_ts", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source_event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("subscription_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("price_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("product_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=True),
        sa.Column("usage_type", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("tax_behavior", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("interval", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column(
            "current_period_start", portal_service.db.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "current_period_end", portal_service.db.UTCDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_items")),
    )
    with op.batch_alter_table("subscription_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_subscription_items_subscription_id", ["subscription_id"], unique=False
        )

    op.create_table(
        "subscriptions",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("stripe_created", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("raw", JSON_TYPE, nullable=True),
        sa.Column("source_ts", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source_event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("customer_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("cancel_at", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("canceled_at", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "current_period_start", portal_service.db.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "current_period_end", portal_service.db.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("trial_start", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("trial_end", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "pause_collection_behavior", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True
        ),
        sa.Column("pause_resumes_at", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("collection_method", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("schedule_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column(
            "default_payment_method", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True
        ),
        sa.Column("latest_invoice_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index("ix_subscriptions_customer_id", ["customer_id"], unique=False)

    op.create_table(
        "tax_ids",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("stripe_created", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("raw", JSON_TYPE, nullable=True),
        sa.Column("source_ts", portal_service.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source_event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", portal_service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("customer_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("value", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column(
            "verification_status", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tax_ids")),
    )
    with op.batch_alter_table("tax_ids", schema=None) as batch_op:
        batch_op.create_index("ix_tax_ids_customer_id", ["customer_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tax_ids", schema=None) as batch_op:
        batch_op.drop_index("ix_tax_ids_customer_id")

    op.drop_table("tax_ids")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_subscriptions_customer_id")

    op.drop_table("subscriptions")
    with op.batch_alter_table("subscription_items", schema=None) as batch_op:
        batch_op.drop_index("ix_subscription_items_subscription_id")

    op.drop_table("subscription_items")
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_index("ix_stripe_events_type_received_at")
        batch_op.drop_index("ix_stripe_events_status_received_at")
        batch_op.drop_index("ix_stripe_events_received_at")
        batch_op.drop_index("ix_stripe_events_created")

    op.drop_table("stripe_events")
    with op.batch_alter_table("portal_sessions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_portal_sessions_idempotency_key_hash",
            postgresql_where=sa.text("idempotency_key_hash IS NOT NULL"),
            sqlite_where=sa.text("idempotency_key_hash IS NOT NULL"),
        )
        batch_op.drop_index("ix_portal_sessions_customer_id")
        batch_op.drop_index("ix_portal_sessions_app_user_id_created")

    op.drop_table("portal_sessions")
    op.drop_table("portal_configurations")
    with op.batch_alter_table("payment_methods", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_methods_customer_id")

    op.drop_table("payment_methods")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("ix_invoices_subscription_id")
        batch_op.drop_index("ix_invoices_customer_id_stripe_created")

    op.drop_table("invoices")
    with op.batch_alter_table("entitlements", schema=None) as batch_op:
        batch_op.drop_index("ix_entitlements_customer_id")

    op.drop_table("entitlements")
    op.drop_table("entitlement_summaries")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_customers_app_user_id_live",
            postgresql_where=sa.text("app_user_id IS NOT NULL AND NOT deleted"),
            sqlite_where=sa.text("app_user_id IS NOT NULL AND NOT deleted"),
        )
        batch_op.drop_index("ix_customers_app_user_id")

    op.drop_table("customers")
