"""Portal flows (deep links): checked against the mirror before Stripe is called, then
encoded as Stripe's `flow_data`.

A flow that names a subscription needs one of the caller's customer's subscriptions in
this mode; the portal limitations (README.md, "Deciding access in your app"; access/policy.py) and the
chosen configuration's features decide whether the portal can do it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from cachetools import TTLCache
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from portal_service.access.facts import (
    subscription_facts,
    subscription_items,
)
from portal_service.access.policy import ItemFacts, Refusal, SubscriptionFacts, flow_refusal
from portal_service.app_state import app_state
from portal_service.errors import InvalidRequest, PortalActionUnavailable, SubscriptionNotFound
from portal_service.gateway import Gateway, StripeObjectMissing
from portal_service.mirror import stripe_models
from portal_service.mirror.apply import apply_fetched
from portal_service.mirror.projections import ITEM_FACT_COLUMNS, item_columns
from portal_service.mirror.tables import PLATFORM_ACCOUNT, Subscription, SubscriptionItem
from portal_service.ops.logging import get_logger
from portal_service.portal.schemas import (
    SUBSCRIPTION_FLOWS,
    AfterCompletion,
    FlowRequest,
    HostedConfirmationAfterCompletion,
    RedirectAfterCompletion,
    SubscriptionCancelFlow,
    SubscriptionPauseFlow,
    SubscriptionUpdateConfirmFlow,
    SubscriptionUpdateFlow,
)

log = get_logger("portal_service.portal.flows")

FEATURE_DISABLED = "feature_disabled"
PRICE_NOT_OFFERED = "price_not_offered"

# The configuration feature each flow needs enabled.
_FEATURE_OF_FLOW = {
    "payment_method_update": "payment_method_update",
    "customer_update": "customer_update",
    "subscription_cancel": "subscription_cancel",
    "subscription_update": "subscription_update",
    "subscription_update_confirm": "subscription_update",
    "subscription_pause": "subscription_pause",
}
# Once a price's tax behavior is inclusive or exclusive Stripe never changes it.
_SETTLED_TAX_BEHAVIORS = ("inclusive", "exclusive")


class TaxBehaviorCache:
    """Prices' tax_behavior read through the gateway, kept a while (bounded, with a TTL):
    an unspecified behavior may still be set later, a settled one never changes."""

    def __init__(self, *, max_entries: int = 1024, ttl_seconds: float = 300.0) -> None:
        # cachetools' TTLCache: expiry on the monotonic clock, least recently used out first.
        self._entries: TTLCache[tuple[bool, str], str] = TTLCache(
            maxsize=max_entries, ttl=ttl_seconds
        )

    def get(self, price_id: str, *, livemode: bool) -> str | None:
        return self._entries.get((livemode, price_id))

    def put(self, price_id: str, tax_behavior: str, *, livemode: bool) -> None:
        self._entries[(livemode, price_id)] = tax_behavior


async def _app_tax_cache(request: Request) -> TaxBehaviorCache:
    return app_state(request).tax_behavior_cache


TaxBehaviorCacheDep = Annotated[TaxBehaviorCache, Depends(_app_tax_cache)]


def flow_data(flow: FlowRequest) -> dict[str, Any]:
    """Stripe's `flow_data` for a validated flow (the shapes of SessionCreateParamsFlowData)."""
    data: dict[str, Any] = {"type": flow.type}
    if isinstance(flow, SubscriptionCancelFlow):
        cancel: dict[str, Any] = {"subscription": flow.subscription_id}
        if flow.retention_coupon is not None:
            cancel["retention"] = {
                "type": "coupon_offer",
                "coupon_offer": {"coupon": flow.retention_coupon},
            }
        data["subscription_cancel"] = cancel
    elif isinstance(flow, SubscriptionUpdateFlow):
        data["subscription_update"] = {"subscription": flow.subscription_id}
    elif isinstance(flow, SubscriptionPauseFlow):
        data["subscription_pause"] = {"subscription": flow.subscription_id}
    elif isinstance(flow, SubscriptionUpdateConfirmFlow):
        confirm: dict[str, Any] = {
            "subscription": flow.subscription_id,
            "items": [item.model_dump(exclude_none=True) for item in flow.items],
        }
        if flow.discounts:
            confirm["discounts"] = [d.model_dump(exclude_none=True) for d in flow.discounts]
        data["subscription_update_confirm"] = confirm
    if flow.after_completion is not None:
        data["after_completion"] = _after_completion(flow.after_completion)
    return data


def _after_completion(after: AfterCompletion) -> dict[str, Any]:
    out: dict[str, Any] = {"type": after.type}
    if isinstance(after, RedirectAfterCompletion):
        out["redirect"] = {"return_url": after.return_url}
    elif isinstance(after, HostedConfirmationAfterCompletion) and after.custom_message:
        out["hosted_confirmation"] = {"custom_message": after.custom_message}
    return out


@dataclass(frozen=True, slots=True)
class _SubscriptionView:
    facts: SubscriptionFacts
    item_ids: frozenset[str]


async def check_flow(
    session: AsyncSession,
    gateway: Gateway,
    *,
    flow: FlowRequest,
    customer_id: str,
    livemode: bool,
    configuration_features: dict[str, Any] | None,
    tax_cache: TaxBehaviorCache,
) -> None:
    """Raise SubscriptionNotFound, InvalidRequest or PortalActionUnavailable if the portal
    cannot run this flow for this customer; may read the subscription and the target
    price from Stripe (no transaction is held across those calls)."""
    facts: SubscriptionFacts | None = None
    target_tax_behavior: str | None = None
    target_price: str | None = None
    if isinstance(flow, SUBSCRIPTION_FLOWS):
        view = await _subscription_view(
            session,
            gateway,
            subscription_id=flow.subscription_id,
            customer_id=customer_id,
            livemode=livemode,
        )
        facts = view.facts
        if isinstance(flow, SubscriptionUpdateConfirmFlow):
            item = flow.items[0]
            if item.id not in view.item_ids:
                raise InvalidRequest(
                    f"flow.items[0].id: {item.id} is not an item of subscription "
                    f"{flow.subscription_id}."
                )
            if item.price is not None:
                target_price = item.price
                target_tax_behavior = await _tax_behavior(
                    session, gateway, tax_cache, price_id=item.price, livemode=livemode
                )
    refusal = flow_refusal(flow.type, facts, target_tax_behavior=target_tax_behavior)
    if refusal is None:
        refusal = _configuration_refusal(flow.type, configuration_features, target_price)
    if refusal is not None:
        raise PortalActionUnavailable(refusal.detail, extra={"reason": refusal.code})


async def _subscription_view(
    session: AsyncSession,
    gateway: Gateway,
    *,
    subscription_id: str,
    customer_id: str,
    livemode: bool,
) -> _SubscriptionView:
    # One answer for "no such subscription" and "someone else's": existence is not leaked.
    not_found = SubscriptionNotFound(
        f"Subscription {subscription_id} does not exist or does not belong to this customer."
    )
    row = await session.get(Subscription, subscription_id)
    if row is not None:
        if (
            row.customer_id != customer_id
            or row.livemode != livemode
            or row.account != PLATFORM_ACCOUNT
        ):
            raise not_found
        facts = (await subscription_facts(session, [row]))[row.id]
        items = (await subscription_items(session, [row.id]))[row.id]
        return _SubscriptionView(facts=facts, item_ids=frozenset(i.id for i in items))

    # The mirror may lag (a webhook not delivered yet): ask Stripe once and apply the
    # answer through the mirror's ordering rules, so a later, older event cannot undo it.
    await session.commit()  # end the read transaction before calling Stripe
    try:
        fetched = await gateway.retrieve("subscription", subscription_id)
    except StripeObjectMissing:
        raise not_found from None
    parsed = stripe_models.Subscription.model_validate(fetched.object)
    if parsed.customer != customer_id or parsed.livemode != livemode:
        raise not_found
    outcome = await apply_fetched(session, "subscription", fetched.object, fetched.fetched_at)
    log.info("subscription_fetched_for_flow", subscription_id=subscription_id, outcome=outcome)
    return _SubscriptionView(
        facts=facts_from_stripe(parsed),
        item_ids=frozenset(item.id for item in parsed.items.data),
    )


def facts_from_stripe(sub: stripe_models.Subscription) -> SubscriptionFacts:
    items = []
    for item in sub.items.data:
        columns = item_columns(item, sub)
        items.append(ItemFacts(**{name: columns[name] for name in ITEM_FACT_COLUMNS}))
    pause = sub.pause_collection
    return SubscriptionFacts(
        id=sub.id,
        status=sub.status or "",
        cancel_at_period_end=sub.cancel_at_period_end,
        cancel_at=sub.cancel_at,
        current_period_start=sub.period_start,
        current_period_end=sub.period_end,
        pause_collection_behavior=pause.behavior if pause is not None else None,
        collection_method=sub.collection_method,
        schedule_id=sub.schedule,
        items=tuple(items),
    )


async def _tax_behavior(
    session: AsyncSession,
    gateway: Gateway,
    cache: TaxBehaviorCache,
    *,
    price_id: str,
    livemode: bool,
) -> str:
    result = await session.execute(
        select(SubscriptionItem.tax_behavior)
        .where(
            col(SubscriptionItem.price_id) == price_id,
            col(SubscriptionItem.livemode) == livemode,
            col(SubscriptionItem.account) == PLATFORM_ACCOUNT,
            col(SubscriptionItem.tax_behavior).in_(_SETTLED_TAX_BEHAVIORS),
        )
        .limit(1)
    )
    mirrored = result.scalars().first()
    if mirrored is not None:
        return str(mirrored)
    cached = cache.get(price_id, livemode=livemode)
    if cached is not None:
        return cached
    await session.commit()  # end the read transaction before calling Stripe
    try:
        fetched = await gateway.retrieve("price", price_id)
    except StripeObjectMissing:
        raise InvalidRequest(f"flow.items[0].price: there is no price {price_id}.") from None
    price = stripe_models.Price.model_validate(fetched.object)
    tax_behavior = price.tax_behavior or "unspecified"
    cache.put(price_id, tax_behavior, livemode=livemode)
    return tax_behavior


def _configuration_refusal(
    flow_type: str, features: dict[str, Any] | None, target_price: str | None
) -> Refusal | None:
    # Judged only from what the mirror knows of the configuration: without it, Stripe decides.
    feature_name = _FEATURE_OF_FLOW[flow_type]
    feature = (features or {}).get(feature_name)
    if not isinstance(feature, dict):
        return None
    if feature.get("enabled") is False:
        return Refusal(
            FEATURE_DISABLED,
            f"The portal configuration does not enable {feature_name}, which the "
            f"{flow_type} flow needs.",
        )
    products = feature.get("products")
    if target_price is None or flow_type != "subscription_update_confirm":
        return None
    if not isinstance(products, list) or not products:
        return None
    offered = {
        price
        for product in products
        if isinstance(product, dict)
        for price in product.get("prices") or ()
    }
    if target_price not in offered:
        return Refusal(
            PRICE_NOT_OFFERED,
            f"The portal configuration does not offer price {target_price} for switching.",
        )
    return None
