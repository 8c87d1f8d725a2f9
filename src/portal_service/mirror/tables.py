"""The SQL mirror: one table per Stripe object kind, plus the event inbox (ARCHITECTURE.md, "The data's path")."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Index, Table, text
from sqlmodel import Field, SQLModel

from portal_service.db import NAMING_CONVENTION, JSONType, UTCDateTime, utcnow

SQLModel.metadata.naming_convention = NAMING_CONVENTION

EVENT_STATUSES = ("pending", "processed", "ignored", "failed")

# The `account` of the platform's own objects; a connected account's rows carry its acct_ id.
PLATFORM_ACCOUNT = ""


def table_of(model: type[SQLModel]) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]  # set by SQLModel(table=True)


class MirrorColumns(SQLModel):
    """Columns every mirrored Stripe object has: identity, mode, the ordering watermark."""

    id: str = Field(primary_key=True, max_length=255)
    livemode: bool = Field(default=False)
    account: str = Field(default="", max_length=255)
    stripe_created: datetime | None = Field(default=None, sa_type=UTCDateTime)
    raw: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    # (source_ts, source_event_id): the newest event or fetch applied to this row.
    source_ts: datetime | None = Field(default=None, sa_type=UTCDateTime)
    source_event_id: str | None = Field(default=None, max_length=255)
    deleted: bool = Field(default=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class StripeEvent(SQLModel, table=True):
    __tablename__ = "stripe_events"
    __table_args__ = (
        Index("ix_stripe_events_status_received_at", "status", "received_at"),
        Index("ix_stripe_events_type_received_at", "type", "received_at"),
        Index("ix_stripe_events_received_at", "received_at"),
        Index("ix_stripe_events_created", "created"),
    )

    id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=255)
    api_version: str | None = Field(default=None, max_length=64)
    created: datetime = Field(sa_type=UTCDateTime)
    livemode: bool = Field(default=False)
    account: str = Field(default="", max_length=255)
    payload: dict[str, Any] = Field(sa_type=JSONType)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    status: str = Field(default="pending", max_length=16)
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None)
    processed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Customer(MirrorColumns, table=True):
    __tablename__ = "customers"
    __table_args__ = (
        # One live customer per app user in each mode and account.
        Index(
            "uq_customers_app_user_id_live",
            "livemode",
            "account",
            "app_user_id",
            unique=True,
            postgresql_where=text("app_user_id IS NOT NULL AND NOT deleted"),
            sqlite_where=text("app_user_id IS NOT NULL AND NOT deleted"),
        ),
        Index("ix_customers_app_user_id", "app_user_id"),
    )

    app_user_id: str | None = Field(default=None, max_length=255)
    email: str | None = Field(default=None)
    name: str | None = Field(default=None)
    default_payment_method: str | None = Field(default=None, max_length=255)
    address: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    tax_exempt: str | None = Field(default=None, max_length=32)
    preferred_locales: list[str] | None = Field(default=None, sa_type=JSONType)


class Subscription(MirrorColumns, table=True):
    __tablename__ = "subscriptions"
    __table_args__ = (Index("ix_subscriptions_customer_id", "customer_id"),)

    customer_id: str | None = Field(default=None, max_length=255)
    status: str | None = Field(default=None, max_length=32)
    cancel_at_period_end: bool = Field(default=False)
    cancel_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    canceled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    current_period_start: datetime | None = Field(default=None, sa_type=UTCDateTime)
    current_period_end: datetime | None = Field(default=None, sa_type=UTCDateTime)
    trial_start: datetime | None = Field(default=None, sa_type=UTCDateTime)
    trial_end: datetime | None = Field(default=None, sa_type=UTCDateTime)
    pause_collection_behavior: str | None = Field(default=None, max_length=32)
    pause_resumes_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    collection_method: str | None = Field(default=None, max_length=32)
    schedule_id: str | None = Field(default=None, max_length=255)
    default_payment_method: str | None = Field(default=None, max_length=255)
    latest_invoice_id: str | None = Field(default=None, max_length=255)


class SubscriptionItem(MirrorColumns, table=True):
    __tablename__ = "subscription_items"
    __table_args__ = (Index("ix_subscription_items_subscription_id", "subscription_id"),)

    subscription_id: str = Field(max_length=255)
    price_id: str | None = Field(default=None, max_length=255)
    product_id: str | None = Field(default=None, max_length=255)
    quantity: int | None = Field(default=None)
    usage_type: str | None = Field(default=None, max_length=32)
    tax_behavior: str | None = Field(default=None, max_length=32)
    interval: str | None = Field(default=None, max_length=16)
    current_period_start: datetime | None = Field(default=None, sa_type=UTCDateTime)
    current_period_end: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PaymentMethod(MirrorColumns, table=True):
    __tablename__ = "payment_methods"
    __table_args__ = (Index("ix_payment_methods_customer_id", "customer_id"),)

    customer_id: str | None = Field(default=None, max_length=255)
    type: str | None = Field(default=None, max_length=64)
    card_brand: str | None = Field(default=None, max_length=32)
    card_last4: str | None = Field(default=None, max_length=4)
    card_exp_month: int | None = Field(default=None)
    card_exp_year: int | None = Field(default=None)


class Invoice(MirrorColumns, table=True):
    __tablename__ = "invoices"
    __table_args__ = (
        Index("ix_invoices_customer_id_stripe_created", "customer_id", "stripe_created", "id"),
        Index("ix_invoices_subscription_id", "subscription_id"),
    )

    customer_id: str | None = Field(default=None, max_length=255)
    subscription_id: str | None = Field(default=None, max_length=255)
    status: str | None = Field(default=None, max_length=32)
    currency: str | None = Field(default=None, max_length=3)
    amount_due: int | None = Field(default=None)
    amount_paid: int | None = Field(default=None)
    hosted_invoice_url: str | None = Field(default=None)
    paid_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class TaxId(MirrorColumns, table=True):
    __tablename__ = "tax_ids"
    __table_args__ = (Index("ix_tax_ids_customer_id", "customer_id"),)

    customer_id: str | None = Field(default=None, max_length=255)
    type: str | None = Field(default=None, max_length=32)
    value: str | None = Field(default=None)
    verification_status: str | None = Field(default=None, max_length=32)


class PortalConfiguration(MirrorColumns, table=True):
    __tablename__ = "portal_configurations"

    is_default: bool = Field(default=False)
    active: bool = Field(default=True)
    name: str | None = Field(default=None)
    default_return_url: str | None = Field(default=None)
    features: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    business_profile: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    # `metadata` is taken by SQLModel itself; the column keeps the contract's name.
    config_metadata: dict[str, Any] | None = Field(
        default=None, sa_type=JSONType, sa_column_kwargs={"name": "metadata"}
    )


class PortalSession(MirrorColumns, table=True):
    """A created portal session, never its URL (a bearer credential)."""

    __tablename__ = "portal_sessions"
    __table_args__ = (
        Index("ix_portal_sessions_app_user_id_created", "app_user_id", "created"),
        Index("ix_portal_sessions_customer_id", "customer_id"),
        Index(
            "uq_portal_sessions_idempotency_key_hash",
            "idempotency_key_hash",
            unique=True,
            postgresql_where=text("idempotency_key_hash IS NOT NULL"),
            sqlite_where=text("idempotency_key_hash IS NOT NULL"),
        ),
    )

    customer_id: str | None = Field(default=None, max_length=255)
    configuration_id: str | None = Field(default=None, max_length=255)
    locale: str | None = Field(default=None, max_length=16)
    flow_type: str | None = Field(default=None, max_length=64)
    return_url: str | None = Field(default=None)
    app_user_id: str | None = Field(default=None, max_length=255)
    # `u:`/`k:` + 16 hex digits of the caller's hashed user id or API key.
    caller: str | None = Field(default=None, max_length=32)
    created: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    idempotency_key_hash: str | None = Field(default=None, max_length=64)
    request_hash: str | None = Field(default=None, max_length=64)


class Entitlement(MirrorColumns, table=True):
    """One active Stripe Entitlements feature of a customer (replaced as a set)."""

    __tablename__ = "entitlements"
    __table_args__ = (Index("ix_entitlements_customer_id", "customer_id"),)

    customer_id: str = Field(max_length=255)
    feature_id: str | None = Field(default=None, max_length=255)
    lookup_key: str | None = Field(default=None)


class EntitlementSummary(MirrorColumns, table=True):
    """Watermark of a customer's entitlement set (id = customer id): an empty set has no rows."""

    __tablename__ = "entitlement_summaries"


class SyncState(SQLModel, table=True):
    """Progress of `portal-service sync`, per kind, so `--resume` continues after a crash:
    `cursor` is the last object id applied (for per-customer kinds, the last customer done)."""

    __tablename__ = "sync_state"

    kind: str = Field(primary_key=True, max_length=64)
    cursor: str | None = Field(default=None, max_length=255)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
