"""The access_until scheduler: access ends at `access_until` (or when a past_due grace
runs out) with no event at all (README.md, "Deciding access in your app"), and the app is told then, not at
the next event.

Leader-free: each replica ticks, but the clock row is taken `FOR UPDATE SKIP LOCKED`, so
one replica at a time advances it over the window (scanned_until, now] and the others
skip the tick. The window's customers go through the outbox's own `record_change`, in the
same transaction as the clock's move: a crash mid-way redoes the window, and a change an
event already reported is not reported again (it compares with the last one enqueued).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from portal_service.access.entitlements import entitlements_answer
from portal_service.access.facts import (
    UNPAID_INVOICE_STATUSES,
    CustomerAccess,
)
from portal_service.db import utcnow
from portal_service.mirror.tables import PLATFORM_ACCOUNT, Invoice, Subscription, table_of
from portal_service.notify.outbox import Answer, CustomerKey, OutboxConfig, record_change
from portal_service.notify.tables import NotificationClock
from portal_service.ops.logging import get_logger

log = get_logger("portal_service.notify")

CLOCK = "access_until"
_CLOCKS = table_of(NotificationClock)
_SUBSCRIPTIONS = table_of(Subscription)
_INVOICES = table_of(Invoice)


def _passed(since: datetime, until: datetime, *, grace_days: int) -> Select[tuple[bool, str]]:
    """Customers with a subscription whose access_until (README.md, "Deciding access in your app") fell in
    (since, until], or, with a past_due grace, whose grace ran out in it."""
    s = _SUBSCRIPTIONS.c
    ended = [
        and_(s.cancel_at > since, s.cancel_at <= until),
        and_(
            s.cancel_at.is_(None),
            s.cancel_at_period_end.is_(True),
            s.current_period_end > since,
            s.current_period_end <= until,
        ),
    ]
    if grace_days > 0:
        # The grace runs from the oldest unpaid invoice (else the period start): it ran out
        # in the window when that moment lies in the window moved back by the grace. A
        # superset is fine: record_change tells only what really changed.
        grace = timedelta(days=grace_days)
        start, end = since - grace, until - grace
        i = _INVOICES.c
        unpaid_in_window = (
            select(i.id)
            .where(
                i.subscription_id == s.id,
                i.status.in_(UNPAID_INVOICE_STATUSES),
                i.deleted.is_(False),
                i.stripe_created > start,
                i.stripe_created <= end,
            )
            .exists()
        )
        ended.append(
            and_(
                s.status == "past_due",
                or_(
                    and_(s.current_period_start > start, s.current_period_start <= end),
                    unpaid_in_window,
                ),
            )
        )
    return (
        select(s.livemode, s.customer_id)
        .distinct()
        .where(s.account == PLATFORM_ACCOUNT, s.customer_id.is_not(None), or_(*ended))
    )


class AccessUntilScheduler:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        config: OutboxConfig,
        *,
        interval: float = 5.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._config = config
        self._interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # the database went away: keep the scheduler alive
                log.warning("notify_scheduler_error", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def tick(self, now: datetime | None = None) -> int | None:
        """Advance the clock to `now`; returns how many notifications were written, None
        when another replica holds the clock (or it was only just started)."""
        now = now or utcnow()
        async with self._sessionmaker() as session:
            scanned = await session.scalar(
                select(_CLOCKS.c.scanned_until)
                .where(_CLOCKS.c.name == CLOCK)
                .with_for_update(skip_locked=True)
            )
            if scanned is None:
                await self._start_clock(session, now)
                return None
            if scanned >= now:
                await session.rollback()
                return 0
            written = await session.run_sync(self._notify_window, scanned, now)
            await session.execute(
                update(_CLOCKS).where(_CLOCKS.c.name == CLOCK).values(scanned_until=now)
            )
            await session.commit()
        if written:
            log.info("notify_access_until", notifications=written)
        return written

    async def _start_clock(self, session: AsyncSession, now: datetime) -> None:
        # The first tick ever starts the clock now (a passage before notifications were
        # turned on is not news); a tick that found the row locked inserts nothing.
        dialect = session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        await session.execute(
            insert(_CLOCKS)
            .values(name=CLOCK, scanned_until=now)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        await session.commit()

    def _notify_window(self, session: Session, since: datetime, until: datetime) -> int:
        grace_days = self._config.policy.past_due_grace_days
        rows = session.execute(_passed(since, until, grace_days=grace_days)).all()
        keys: list[CustomerKey] = sorted((row.livemode, row.customer_id) for row in rows)
        written = 0
        for key in keys:

            def at_window_start(facts: CustomerAccess | None, customer_id: str = key[1]) -> Answer:
                # No notification yet: compare with the answer just before the window.
                return entitlements_answer(
                    customer_id, facts, policy=self._config.policy, now=since
                )

            if record_change(session, self._config, key, now=until, baseline=at_window_start):
                written += 1
        return written
