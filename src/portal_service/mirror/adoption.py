"""What the mirror holds of a customer, as Stripe payloads: the offline stand-in takes such a
customer over (its events were signed and posted by hand) so its portal can be opened."""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from portal_service.mirror import tables


async def mirrored_objects(session: AsyncSession, customer_id: str) -> list[dict[str, Any]] | None:
    """The test-mode platform customer's payload (filled in from its columns) and those of
    its subscriptions, payment methods, invoices and tax ids; None if the mirror has none."""
    row = await session.get(tables.Customer, customer_id)
    if row is None or row.deleted or row.livemode or row.account:
        return None
    obj = copy.deepcopy(row.raw) if row.raw else {}
    obj.setdefault("object", "customer")
    obj.update(id=row.id, livemode=False)
    obj.setdefault("email", row.email)
    obj.setdefault("name", row.name)
    obj.setdefault("metadata", {})
    obj.setdefault("preferred_locales", row.preferred_locales or [])
    obj.setdefault("invoice_settings", {"default_payment_method": row.default_payment_method})
    objects = [obj]
    for table in (tables.Subscription, tables.PaymentMethod, tables.Invoice, tables.TaxId):
        children = await session.execute(
            select(table).where(
                col(table.customer_id) == customer_id,
                col(table.deleted).is_(False),
                col(table.raw).is_not(None),
            )
        )
        objects += [copy.deepcopy(child.raw) for child in children.scalars() if child.raw]
    return objects
