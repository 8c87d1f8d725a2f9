"""Wire shapes of the mirror's routes (tables never go to the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from portal_service.pagination import Page

WebhookStatus = Literal["processed", "ignored", "duplicate", "stale"]
EventStatus = Literal["pending", "processed", "ignored", "failed"]


class WebhookAck(BaseModel):
    received: Literal[True] = True
    status: WebhookStatus = Field(
        description="processed: applied (or already there); ignored: a type or mode this "
        "service does not project; duplicate: already recorded and handled; stale: older "
        "than the mirrored state, recorded but not applied."
    )


class EventOut(BaseModel):
    id: str
    type: str
    api_version: str | None
    created: datetime
    livemode: bool
    account: str
    status: EventStatus
    attempts: int
    last_error: str | None
    received_at: datetime
    processed_at: datetime | None
    payload: dict[str, Any] = Field(
        description="The event as received, portal session URLs removed."
    )


class EventPage(Page[EventOut]):
    """One page of recorded events."""


class ReplayResult(BaseModel):
    id: str
    status: EventStatus = Field(description="The event's recorded status after the replay.")
    result: Literal["processed", "ignored", "stale"] = Field(
        description="What the replay did: applied it (or found it already applied), ignored "
        "it, or found the mirror already newer."
    )


class ResyncResult(BaseModel):
    """What `POST /admin/customers/{id}/resync` fetched from Stripe and applied, per kind."""

    customer_id: str
    customers: int
    subscriptions: int
    payment_methods: int
    invoices: int
    tax_ids: int
    entitlements: int = Field(description="Active Stripe Entitlements features.")
