"""Helpers of the notification tests: events that grant and revoke access, and the outbox
as the database holds it now."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from mirror.stripe_payloads import customer, item, subscription
from portal_service.db import create_sessionmaker
from portal_service.notify.tables import Notification
from support import make_event

T0 = int(time.time()) - 3600


def customer_created(cus_id: str, *, created: int = T0) -> dict[str, Any]:
    return make_event("customer.created", customer(cus_id), created=created)


def subscribed(
    cus_id: str, sub_id: str, *, created: int, status: str = "active", **overrides: Any
) -> dict[str, Any]:
    body = subscription(
        sub_id,
        customer=cus_id,
        status=status,
        items=[item(f"si_{sub_id}", subscription_id=sub_id)],
        **overrides,
    )
    kind = "deleted" if status == "canceled" else "updated"
    return make_event(f"customer.subscription.{kind}", body, created=created)


async def notifications(engine: AsyncEngine, **where: Any) -> list[Notification]:
    async with create_sessionmaker(engine)() as session:
        query = select(Notification).order_by(col(Notification.customer_id), col(Notification.seq))
        for name, value in where.items():
            query = query.where(getattr(Notification, name) == value)
        return list((await session.execute(query)).scalars().all())
