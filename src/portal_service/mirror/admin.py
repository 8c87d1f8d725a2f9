"""Recorded events for ops: the cursor-paginated list behind GET /admin/events."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from portal_service.mirror.schemas import EventOut, EventPage, EventStatus
from portal_service.mirror.stripe_models import redact_session_urls
from portal_service.mirror.tables import StripeEvent
from portal_service.pagination import Keyset, PageRequest, paginate

EVENT_ORDER: Keyset[StripeEvent] = Keyset(
    "events", col(StripeEvent.received_at), col(StripeEvent.id)
)
"""Newest received first, keyset-paginated on (received_at, id)."""


def _out(event: StripeEvent) -> EventOut:
    return EventOut(
        id=event.id,
        type=event.type,
        api_version=event.api_version,
        created=event.created,
        livemode=event.livemode,
        account=event.account,
        status=event.status,  # type: ignore[arg-type]  # one of EVENT_STATUSES by construction
        attempts=event.attempts,
        last_error=event.last_error,
        received_at=event.received_at,
        processed_at=event.processed_at,
        # Stored redacted already; redacted again so no older row can leak a session URL.
        payload=redact_session_urls(event.payload),
    )


async def list_events(
    session: AsyncSession,
    *,
    status: EventStatus | None,
    event_type: str | None,
    page: PageRequest,
) -> EventPage:
    query = select(StripeEvent)
    if status is not None:
        query = query.where(col(StripeEvent.status) == status)
    if event_type is not None:
        query = query.where(col(StripeEvent.type) == event_type)
    rows, next_cursor = await paginate(session, query, keyset=EVENT_ORDER, page=page)
    return EventPage(data=[_out(row) for row in rows], next_cursor=next_cursor)
