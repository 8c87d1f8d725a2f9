"""The caller's billing state as apps read it: customer, subscriptions, invoices, payment methods.

Every function takes a customer already resolved within one mode and the platform
account, and reads only rows of that customer, mode and account.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from portal_service.access.facts import (
    subscription_facts,
    subscription_items,
    without_raw,
)
from portal_service.access.policy import (
    AccessPolicy,
    access_until,
    grants_access,
    portal_capabilities,
)
from portal_service.access.schemas import (
    Address,
    BillingCustomer,
    BillingInvoice,
    BillingInvoicePage,
    BillingPaymentMethod,
    BillingPaymentMethodPage,
    BillingSubscription,
    BillingSubscriptionItem,
    BillingSubscriptionPage,
    CardDetails,
    CustomerTaxId,
    PauseCollection,
    PortalCapabilities,
)
from portal_service.mirror.tables import (
    PLATFORM_ACCOUNT,
    Customer,
    Invoice,
    PaymentMethod,
    Subscription,
    SubscriptionItem,
    TaxId,
)
from portal_service.pagination import Keyset, PageRequest, paginate

SUBSCRIPTIONS = Keyset[Subscription](
    "subscriptions", col(Subscription.stripe_created), col(Subscription.id)
)
INVOICES = Keyset[Invoice]("invoices", col(Invoice.stripe_created), col(Invoice.id))
PAYMENT_METHODS = Keyset[PaymentMethod](
    "payment_methods", col(PaymentMethod.stripe_created), col(PaymentMethod.id)
)


async def customer_profile(session: AsyncSession, customer: Customer) -> BillingCustomer:
    tax_ids = await session.execute(
        select(TaxId)
        .where(
            col(TaxId.customer_id) == customer.id,
            col(TaxId.livemode) == customer.livemode,
            col(TaxId.account) == PLATFORM_ACCOUNT,
            col(TaxId.deleted).is_(False),
        )
        .order_by(col(TaxId.stripe_created), col(TaxId.id))
        .options(without_raw(col(TaxId.raw)))
    )
    return BillingCustomer(
        id=customer.id,
        email=customer.email,
        name=customer.name,
        address=_address(customer.address),
        preferred_locales=list(customer.preferred_locales or []),
        tax_exempt=customer.tax_exempt,
        default_payment_method=customer.default_payment_method,
        livemode=customer.livemode,
        created_at=customer.stripe_created,
        tax_ids=[
            CustomerTaxId(
                id=tax_id.id,
                type=tax_id.type,
                value=tax_id.value,
                verification_status=tax_id.verification_status,
            )
            for tax_id in tax_ids.scalars().all()
        ],
    )


def _address(value: dict[str, Any] | None) -> Address | None:
    if not value:
        return None
    try:
        return Address.model_validate(value)
    except ValidationError:
        # The column holds what Stripe sent; one odd value must not take the whole read down.
        return None


async def subscriptions_page(
    session: AsyncSession,
    customer: Customer,
    *,
    page: PageRequest,
    policy: AccessPolicy,
    now: datetime,
) -> BillingSubscriptionPage:
    """All of the customer's subscriptions, canceled ones included, newest first."""
    statement = (
        select(Subscription)
        .where(
            col(Subscription.customer_id) == customer.id,
            col(Subscription.livemode) == customer.livemode,
            col(Subscription.account) == PLATFORM_ACCOUNT,
        )
        .options(without_raw(col(Subscription.raw)))
    )
    subscriptions, next_cursor = await paginate(session, statement, keyset=SUBSCRIPTIONS, page=page)
    items = await subscription_items(session, [s.id for s in subscriptions], load_raw=False)
    facts = await subscription_facts(session, subscriptions, items=items)
    data = []
    for subscription in subscriptions:
        sub_facts = facts[subscription.id]
        capabilities = portal_capabilities(sub_facts)
        data.append(
            BillingSubscription(
                id=subscription.id,
                status=subscription.status,
                items=[_item(item) for item in items.get(subscription.id, [])],
                current_period_start=subscription.current_period_start,
                current_period_end=subscription.current_period_end,
                trial_start=subscription.trial_start,
                trial_end=subscription.trial_end,
                cancel_at_period_end=subscription.cancel_at_period_end,
                cancel_at=subscription.cancel_at,
                canceled_at=subscription.canceled_at,
                ended_at=subscription.ended_at,
                pause_collection=(
                    PauseCollection(
                        behavior=subscription.pause_collection_behavior,
                        resumes_at=subscription.pause_resumes_at,
                    )
                    if subscription.pause_collection_behavior is not None
                    else None
                ),
                collection_method=subscription.collection_method,
                schedule_id=subscription.schedule_id,
                created_at=subscription.stripe_created,
                has_access=grants_access(sub_facts, policy=policy, now=now),
                access_until=access_until(sub_facts),
                portal=PortalCapabilities(
                    can_update=capabilities.can_update,
                    can_cancel=capabilities.can_cancel,
                    reasons=list(capabilities.reasons),
                ),
            )
        )
    return BillingSubscriptionPage(data=data, next_cursor=next_cursor)


def _item(item: SubscriptionItem) -> BillingSubscriptionItem:
    return BillingSubscriptionItem(
        id=item.id,
        price_id=item.price_id,
        product_id=item.product_id,
        quantity=item.quantity,
        usage_type=item.usage_type,
        interval=item.interval,
        tax_behavior=item.tax_behavior,
        current_period_start=item.current_period_start,
        current_period_end=item.current_period_end,
    )


async def invoices_page(
    session: AsyncSession, customer: Customer, *, page: PageRequest
) -> BillingInvoicePage:
    """The customer's invoices, newest first."""
    statement = (
        select(Invoice)
        .where(
            col(Invoice.customer_id) == customer.id,
            col(Invoice.livemode) == customer.livemode,
            col(Invoice.account) == PLATFORM_ACCOUNT,
            col(Invoice.deleted).is_(False),
        )
        .options(without_raw(col(Invoice.raw)))
    )
    invoices, next_cursor = await paginate(session, statement, keyset=INVOICES, page=page)
    return BillingInvoicePage(
        data=[
            BillingInvoice(
                id=invoice.id,
                status=invoice.status,
                currency=invoice.currency,
                amount_due=invoice.amount_due,
                amount_paid=invoice.amount_paid,
                hosted_invoice_url=invoice.hosted_invoice_url,
                subscription_id=invoice.subscription_id,
                created_at=invoice.stripe_created,
                paid_at=invoice.paid_at,
            )
            for invoice in invoices
        ],
        next_cursor=next_cursor,
    )


async def payment_methods_page(
    session: AsyncSession, customer: Customer, *, page: PageRequest
) -> BillingPaymentMethodPage:
    """Payment methods attached to the customer (a detached one has no customer), newest first."""
    statement = (
        select(PaymentMethod)
        .where(
            col(PaymentMethod.customer_id) == customer.id,
            col(PaymentMethod.livemode) == customer.livemode,
            col(PaymentMethod.account) == PLATFORM_ACCOUNT,
            col(PaymentMethod.deleted).is_(False),
        )
        .options(without_raw(col(PaymentMethod.raw)))
    )
    methods, next_cursor = await paginate(session, statement, keyset=PAYMENT_METHODS, page=page)
    return BillingPaymentMethodPage(
        data=[
            BillingPaymentMethod(
                id=method.id,
                type=method.type,
                card=_card(method),
                is_default=(
                    customer.default_payment_method is not None
                    and method.id == customer.default_payment_method
                ),
                created_at=method.stripe_created,
            )
            for method in methods
        ],
        next_cursor=next_cursor,
    )


def _card(method: PaymentMethod) -> CardDetails | None:
    if method.type != "card":
        return None
    return CardDetails(
        brand=method.card_brand,
        last4=method.card_last4,
        exp_month=method.card_exp_month,
        exp_year=method.card_exp_year,
    )
