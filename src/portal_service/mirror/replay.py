"""`portal-service replay`: re-apply recorded events, oldest first, through the webhook path."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from portal_service.db import utcnow
from portal_service.errors import DomainError, EventNotFound
from portal_service.mirror.inbox import awaiting_retry
from portal_service.mirror.intake import EventProcessor
from portal_service.mirror.tables import StripeEvent


@dataclass
class ReplaySummary:
    results: Counter[str] = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.results["failed"]


async def events_to_replay(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    status: str,
    limit: int | None = None,
) -> list[str]:
    """Ids of recorded events in `status`, in the order Stripe created them. `failed`
    includes events left `pending` past IN_FLIGHT, which count as failed (a crash)."""
    where = awaiting_retry(utcnow()) if status == "failed" else col(StripeEvent.status) == status
    query = (
        select(StripeEvent.id).where(where).order_by(col(StripeEvent.created), col(StripeEvent.id))
    )
    if limit is not None:
        query = query.limit(limit)
    async with sessionmaker() as session:
        return list((await session.execute(query)).scalars().all())


async def replay_events(
    processor: EventProcessor,
    event_ids: Sequence[str],
    *,
    on_each: Callable[[str, str], None] | None = None,
) -> ReplaySummary:
    """Replay each event in turn. One at a time on purpose: a replay may re-fetch from
    Stripe, and a backlog of failed events should not become a burst of API calls."""
    summary = ReplaySummary()
    for event_id in event_ids:
        try:
            _status, result = await processor.replay(event_id)
            outcome: str = result
        except EventNotFound:
            summary.missing.append(event_id)
            outcome = "missing"
        except DomainError:
            # Recorded as failed with its error by the processor; the next replay retries it.
            outcome = "failed"
        summary.results[outcome] += 1
        if on_each is not None:
            on_each(event_id, outcome)
    return summary
