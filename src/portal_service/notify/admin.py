"""Notifications for ops: the list behind GET /admin/notifications and the replay."""

from __future__ import annotations

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from portal_service.db import utcnow
from portal_service.errors import DomainError
from portal_service.mirror.tables import table_of
from portal_service.notify.outbox import GIVE_UP_AFTER
from portal_service.notify.schemas import NotificationOut, NotificationPage, NotificationStatus
from portal_service.notify.tables import Notification
from portal_service.ops.metrics import (
    NOTIFICATIONS_OLDEST_UNDELIVERED_SECONDS,
    NOTIFICATIONS_PARKED,
)
from portal_service.pagination import Keyset, PageRequest, paginate

NOTIFICATION_ORDER: Keyset[Notification] = Keyset(
    "notifications", col(Notification.created_at), col(Notification.id)
)
"""Newest first, keyset-paginated on (created_at, id)."""


class NotificationNotFound(DomainError):
    status = 404
    code = "notification_not_found"
    default_detail = "No notification with this id."


def _out(row: Notification) -> NotificationOut:
    return NotificationOut(
        id=row.id,
        customer_id=row.customer_id,
        app_user_id=row.app_user_id,
        livemode=row.livemode,
        status=row.status,  # type: ignore[arg-type]  # one of NOTIFICATION_STATUSES by construction
        attempts=row.attempts,
        current=row.current,
        previous=row.previous,
        changed_at=row.changed_at,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        delivered_at=row.delivered_at,
        last_error=row.last_error,
    )


async def list_notifications(
    session: AsyncSession, *, status: NotificationStatus | None, page: PageRequest
) -> NotificationPage:
    query = select(Notification)
    if status is not None:
        query = query.where(col(Notification.status) == status)
    rows, next_cursor = await paginate(session, query, keyset=NOTIFICATION_ORDER, page=page)
    return NotificationPage(data=[_out(row) for row in rows], next_cursor=next_cursor)


async def replay_notification(session: AsyncSession, notification_id: str) -> NotificationOut:
    """Deliver it again, now, with three more days of retries (delivered or parked ones
    too). In order still: it holds the customer's later pending notifications back."""
    now = utcnow()
    table = table_of(Notification)
    result = await session.execute(
        update(table)
        .where(table.c.id == notification_id)
        .values(
            status="pending",
            attempts=0,
            next_attempt_at=now,
            give_up_at=now + GIVE_UP_AFTER,
            delivered_at=None,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]  # a CursorResult
        raise NotificationNotFound()
    row = await session.get(Notification, notification_id, populate_existing=True)
    assert row is not None  # noqa: S101  # updated just above, in this transaction
    return _out(row)


async def refresh_notification_gauges(session: AsyncSession) -> None:
    """The alerting gauges, from the database, so every replica and worker agrees."""
    table = table_of(Notification)
    oldest = await session.scalar(
        select(func.min(table.c.created_at)).where(table.c.status == "pending")
    )
    parked = await session.scalar(
        select(func.count()).select_from(table).where(table.c.status == "parked")
    )
    NOTIFICATIONS_OLDEST_UNDELIVERED_SECONDS.set(
        max(0.0, (utcnow() - oldest).total_seconds()) if oldest is not None else 0.0
    )
    NOTIFICATIONS_PARKED.set(parked or 0)
