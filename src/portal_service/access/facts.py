"""Mirror rows read into the policy's facts: the one place that knows how to find a user's
customer and a subscription's items, for /me/* and for the flow checks of POST /portal-sessions.

Every read is scoped to one mode and the platform account (`account = ''`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import type_coerce
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, func, select

from portal_service.access.policy import ItemFacts, SubscriptionFacts
from portal_service.db import UTCDateTime
from portal_service.mirror.tables import (
    Customer,
    Entitlement,
    Invoice,
    Subscription,
    SubscriptionItem,
)

PLATFORM_ACCOUNT = ""
UNPAID_INVOICE_STATUSES = ("open", "uncollectible")
ENDED_STATUSES = ("canceled", "incomplete_expired")


async def linked_customer(
    session: AsyncSession, *, app_user_id: str, livemode: bool
) -> Customer | None:
    """The live (not deleted) customer linked to an app user, in this mode, on the platform."""
    result = await session.execute(
        select(Customer).where(
            col(Customer.app_user_id) == app_user_id,
            col(Customer.livemode) == livemode,
            col(Customer.account) == PLATFORM_ACCOUNT,
            col(Customer.deleted).is_(False),
        )
    )
    return result.scalars().first()


async def customer_by_id(
    session: AsyncSession, customer_id: str, *, livemode: bool
) -> Customer | None:
    """A live customer of this mode on the platform account, or None."""
    customer = await session.get(Customer, customer_id)
    if (
        customer is None
        or customer.deleted
        or customer.livemode != livemode
        or customer.account != PLATFORM_ACCOUNT
    ):
        return None
    return customer


async def customer_subscriptions(
    session: AsyncSession, customer_id: str, *, livemode: bool
) -> list[Subscription]:
    """All of a customer's subscriptions (canceled ones too), newest first."""
    result = await session.execute(
        select(Subscription)
        .where(
            col(Subscription.customer_id) == customer_id,
            col(Subscription.livemode) == livemode,
            col(Subscription.account) == PLATFORM_ACCOUNT,
        )
        .order_by(col(Subscription.stripe_created).desc(), col(Subscription.id).desc())
    )
    return list(result.scalars().all())


async def subscription_items(
    session: AsyncSession, subscription_ids: Sequence[str]
) -> dict[str, list[SubscriptionItem]]:
    """Live items of each subscription, keyed by subscription id (one query for all)."""
    out: dict[str, list[SubscriptionItem]] = {sid: [] for sid in subscription_ids}
    if not subscription_ids:
        return out
    result = await session.execute(
        select(SubscriptionItem)
        .where(
            col(SubscriptionItem.subscription_id).in_(subscription_ids),
            col(SubscriptionItem.deleted).is_(False),
        )
        .order_by(col(SubscriptionItem.stripe_created), col(SubscriptionItem.id))
    )
    for item in result.scalars().all():
        out[item.subscription_id].append(item)
    return out


async def oldest_unpaid_invoices(
    session: AsyncSession, subscription_ids: Sequence[str]
) -> dict[str, datetime]:
    """Creation time of each subscription's oldest unpaid invoice (for the past_due grace)."""
    if not subscription_ids:
        return {}
    result = await session.execute(
        select(
            col(Invoice.subscription_id),
            # type_coerce keeps the UTC type through min(), which SQLite would hand back as text.
            type_coerce(func.min(col(Invoice.stripe_created)), UTCDateTime()),
        )
        .where(
            col(Invoice.subscription_id).in_(subscription_ids),
            col(Invoice.status).in_(UNPAID_INVOICE_STATUSES),
            col(Invoice.deleted).is_(False),
        )
        .group_by(col(Invoice.subscription_id))
    )
    return {sid: created for sid, created in result.all() if sid is not None}


def to_facts(
    subscription: Subscription,
    items: Sequence[SubscriptionItem],
    *,
    oldest_unpaid_invoice_created: datetime | None = None,
) -> SubscriptionFacts:
    status = subscription.status or ""
    if subscription.deleted and status not in ENDED_STATUSES:
        # A tombstone comes from customer.subscription.deleted, which Stripe sends only for
        # an ended subscription: whatever status the row last held, it is over.
        status = "canceled"
    return SubscriptionFacts(
        id=subscription.id,
        status=status,
        cancel_at_period_end=subscription.cancel_at_period_end,
        cancel_at=subscription.cancel_at,
        current_period_start=subscription.current_period_start,
        current_period_end=subscription.current_period_end,
        pause_collection_behavior=subscription.pause_collection_behavior,
        collection_method=subscription.collection_method,
        schedule_id=subscription.schedule_id,
        items=tuple(
            ItemFacts(
                price_id=item.price_id,
                product_id=item.product_id,
                quantity=item.quantity,
                usage_type=item.usage_type,
                tax_behavior=item.tax_behavior,
            )
            for item in items
        ),
        oldest_unpaid_invoice_created=oldest_unpaid_invoice_created,
    )


async def subscription_facts(
    session: AsyncSession,
    subscriptions: Sequence[Subscription],
    *,
    items: Mapping[str, Sequence[SubscriptionItem]] | None = None,
) -> dict[str, SubscriptionFacts]:
    """Facts for several subscriptions with two queries, keyed by subscription id.

    `items` (from `subscription_items`) saves a query when the caller already has them.
    """
    ids = [s.id for s in subscriptions]
    if items is None:
        items = await subscription_items(session, ids)
    unpaid = await oldest_unpaid_invoices(session, ids)
    return {
        s.id: to_facts(s, items.get(s.id, ()), oldest_unpaid_invoice_created=unpaid.get(s.id))
        for s in subscriptions
    }


async def active_features(session: AsyncSession, customer: Customer) -> list[str]:
    """Lookup keys of the customer's active Stripe Entitlements features, sorted, once each."""
    result = await session.execute(
        select(col(Entitlement.lookup_key))
        .where(
            col(Entitlement.customer_id) == customer.id,
            col(Entitlement.livemode) == customer.livemode,
            col(Entitlement.account) == PLATFORM_ACCOUNT,
            col(Entitlement.deleted).is_(False),
            col(Entitlement.lookup_key).is_not(None),
        )
        .distinct()
    )
    return sorted(key for key in result.scalars().all() if key)
