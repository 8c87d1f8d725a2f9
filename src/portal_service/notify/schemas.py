"""Wire shapes of the notification routes (tables never go to the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from portal_service.pagination import Page

NotificationStatus = Literal["pending", "delivered", "parked"]


class NotificationOut(BaseModel):
    id: str = Field(description="Also the `webhook-id` header of its deliveries.")
    type: Literal["access.changed"] = "access.changed"
    customer_id: str
    app_user_id: str | None
    livemode: bool
    status: NotificationStatus = Field(
        description="pending: not delivered yet (maybe retrying); delivered; parked: given "
        "up after three days of failures (replay it)."
    )
    attempts: int
    current: dict[str, Any] = Field(description="The entitlements answer it announces.")
    previous: dict[str, Any] | None = Field(
        description="The last answer delivered before it, as sent (null until it is sent, "
        "or when none was)."
    )
    changed_at: datetime
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="When it is tried next (pending only).")
    delivered_at: datetime | None
    last_error: str | None


class NotificationPage(Page[NotificationOut]):
    """One page of notifications, newest first."""
