"""The offline stand-in's own state (README.md, "Offline mode"): what "Stripe"
holds when there is no Stripe, kept in the database so it survives restarts and is shared
by every process on one database.

Its own tables rather than a view of the mirror: the mirror is what webhooks made of
Stripe, and the stand-in must stay the source those webhooks come from (a re-fetch or a
`sync` answers from here, an event whose delivery failed is delivered again from here).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

from portal_service.db import NAMING_CONVENTION, JSONType, UTCDateTime, utcnow

# Whichever table module is imported first, constraint names follow the convention.
SQLModel.metadata.naming_convention = NAMING_CONVENTION


class OfflineObject(SQLModel, table=True):
    """One object of the stand-in, as Stripe's API would return it."""

    __tablename__ = "offline_objects"
    __table_args__ = (
        Index("ix_offline_objects_kind_customer_id", "kind", "customer_id"),
        Index("ix_offline_objects_kind_created", "kind", "created"),
    )

    id: str = Field(primary_key=True, max_length=255)
    kind: str = Field(max_length=64)
    customer_id: str | None = Field(default=None, max_length=255)
    object: dict[str, Any] = Field(sa_type=JSONType)
    created: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class OfflineIdempotency(SQLModel, table=True):
    """An Idempotency-Key the stand-in answered, as Stripe keeps them: the same key replays
    the same object, the same key with other parameters is refused."""

    __tablename__ = "offline_idempotency_keys"

    key: str = Field(primary_key=True, max_length=255)
    request_hash: str = Field(max_length=64)
    object_id: str = Field(max_length=255)
    created: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class OfflineSession(SQLModel, table=True):
    """An offline portal session. The link's token is stored only as its SHA-256: like a
    Stripe portal URL it is a bearer credential."""

    __tablename__ = "offline_sessions"
    __table_args__ = (
        Index("uq_offline_sessions_token_hash", "token_hash", unique=True),
        Index(
            "uq_offline_sessions_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
            sqlite_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=255)
    token_hash: str = Field(max_length=64)
    # The token itself is kept only for an Idempotency-Key replay within the 5 minutes an
    # unused session lives (Stripe replays the same URL), and cleared on first use.
    replay_token: str | None = Field(default=None, max_length=128)
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_hash: str | None = Field(default=None, max_length=64)
    customer_id: str = Field(max_length=255)
    session: dict[str, Any] = Field(sa_type=JSONType)
    csrf_token: str = Field(max_length=64)
    created: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_activity: datetime | None = Field(default=None, sa_type=UTCDateTime)
    completed: bool = Field(default=False)


class OfflineFormNonce(SQLModel, table=True):
    """A form the portal page rendered: accepted once, so a replayed form is refused."""

    __tablename__ = "offline_form_nonces"
    __table_args__ = (Index("ix_offline_form_nonces_session_id", "session_id"),)

    nonce: str = Field(primary_key=True, max_length=64)
    session_id: str = Field(max_length=255)
    created: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class OfflineOutbox(SQLModel, table=True):
    """Events the stand-in emitted, in emission order, until this service's own /webhooks
    acknowledged them (a failed delivery is retried on the next one, as Stripe retries)."""

    __tablename__ = "offline_outbox"
    __table_args__ = (Index("ix_offline_outbox_delivered_at_seq", "delivered_at", "seq"),)

    seq: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=255, unique=True)
    event: dict[str, Any] = Field(sa_type=JSONType)
    created: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    attempts: int = Field(default=0)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class OfflineSecret(SQLModel, table=True):
    """Development-only secrets offline mode generates when none is configured (the demo
    token's AUTH_JWT_SECRET), kept so `serve` and `demo-data` agree across restarts."""

    __tablename__ = "offline_secrets"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=255)
    created: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
