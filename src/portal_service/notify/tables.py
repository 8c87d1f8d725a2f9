"""The notification outbox and the scheduler's clock (README.md, "Being told when access changes")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from portal_service.db import JSONType, UTCDateTime, utcnow
from portal_service.mirror import tables as _mirror_tables  # noqa: F401  (naming convention)

NOTIFICATION_STATUSES = ("pending", "delivered", "parked")


class Notification(SQLModel, table=True):
    """One `access.changed` for one customer: the answer moved from `since` to `current`.

    `seq` orders a customer's notifications (delivered strictly in that order). A row is
    `pending` until delivered; after three days of failures it is `parked`. While a
    delivery is in flight, `next_attempt_at` is its lease: no other replica picks it up.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("livemode", "customer_id", "seq"),
        Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_notifications_created_at", "created_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(max_length=255)
    livemode: bool = Field(default=False)
    seq: int
    app_user_id: str | None = Field(default=None, max_length=255)
    since: dict[str, Any] = Field(sa_type=JSONType)
    current: dict[str, Any] = Field(sa_type=JSONType)
    # What the delivery said was the last answer delivered (set when it is sent).
    previous: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    changed_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    status: str = Field(default="pending", max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    give_up_at: datetime = Field(sa_type=UTCDateTime)
    last_error: str | None = Field(default=None)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class NotificationClock(SQLModel, table=True):
    """How far the access_until scheduler has looked: one row per clock, locked by the
    replica that advances it (SKIP LOCKED), so no leader is needed."""

    __tablename__ = "notification_clocks"

    name: str = Field(primary_key=True, max_length=64)
    scanned_until: datetime = Field(sa_type=UTCDateTime)
