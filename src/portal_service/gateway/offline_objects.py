"""Offline mode's portal actions as Stripe performs them: pure functions from the stand-in's
objects to the changed objects and the events Stripe would send, in Stripe's order.

Objects have the shape of the pinned API version (2026-10-28.endive: billing periods on the
subscription items, an invoice's subscription under `parent.subscription_details`).
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from portal_service.access.policy import (
    ItemFacts,
    SubscriptionFacts,
    flow_refusal,
    portal_capabilities,
)
from portal_service.mirror import stripe_models

DEFAULT_CONFIGURATION = "bpc_offline_default"
LIVE_STATUSES = frozenset({"active", "trialing"})
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})
# Stripe's documented test card numbers, the only ones the offline portal accepts.
TEST_CARDS: dict[str, str] = {
    "4242424242424242": "visa",
    "4000056655665556": "visa",
    "5555555555554444": "mastercard",
    "2223003122003222": "mastercard",
    "378282246310005": "amex",
    "6011111111111117": "discover",
}
# Tax id types the offline portal offers, with a loose check of each one's shape.
TAX_ID_TYPES: dict[str, tuple[int, int]] = {
    "eu_vat": (8, 14),
    "gb_vat": (9, 14),
    "ch_vat": (12, 16),
    "us_ein": (9, 10),
    "au_abn": (11, 11),
}
MAX_QUANTITY = 99


class ActionRefused(Exception):
    """The portal does not allow this action; `reason` is a stable code, the message is
    shown to the customer (translated by the page)."""

    def __init__(self, reason: str, detail: str, *, status: int = 409) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status


def new_id(prefix: str) -> str:
    return f"{prefix}_offline_{secrets.token_hex(8)}"


@dataclass(slots=True)
class Emitted:
    """What one action did: the objects to store and the events to send, in order."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = field(default_factory=list)

    def emit(
        self, event_type: str, obj: dict[str, Any], previous: dict[str, Any] | None = None
    ) -> None:
        snapshot = copy.deepcopy(obj)
        self.events.append((event_type, snapshot, previous))
        if "id" not in obj:
            return  # an entitlement summary: no object of its own, only the event
        if all(o.get("id") != obj.get("id") for o in self.objects):
            self.objects.append(obj)
        else:
            self.objects = [obj if o.get("id") == obj.get("id") else o for o in self.objects]


def make_event(
    event_type: str,
    obj: dict[str, Any],
    *,
    created: int,
    api_version: str,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if previous:
        data["previous_attributes"] = previous
    return {
        "id": new_id("evt"),
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def _previous(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {key: before.get(key) for key in after if before.get(key) != after.get(key)}


def customer_object(
    *, email: str | None, name: str | None, app_user_id: str | None, created: int
) -> dict[str, Any]:
    return {
        "id": new_id("cus"),
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": created,
        "currency": None,
        "deleted": False,
        "email": email,
        "invoice_settings": {"default_payment_method": None},
        "livemode": False,
        "metadata": {"app_user_id": app_user_id} if app_user_id else {},
        "name": name,
        "phone": None,
        "preferred_locales": [],
        "tax_exempt": "none",
    }


def default_configuration(*, created: int, prices: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """The stand-in's default portal configuration: every feature on, as a newcomer expects."""
    by_product: dict[str, list[str]] = {}
    for price in prices:
        by_product.setdefault(str(price["product"]), []).append(str(price["id"]))
    return configuration_object(
        DEFAULT_CONFIGURATION,
        created=created,
        is_default=True,
        cancel_mode="at_period_end",
        products=[
            {"product": product, "prices": ids, "adjustable_quantity": {"enabled": True}}
            for product, ids in by_product.items()
        ],
    )


def configuration_object(
    configuration_id: str,
    *,
    created: int,
    is_default: bool,
    cancel_mode: str,
    products: list[dict[str, Any]],
    default_return_url: str | None = None,
    headline: str = "Demo SaaS",
) -> dict[str, Any]:
    return {
        "id": configuration_id,
        "object": "billing_portal.configuration",
        "active": True,
        "application": None,
        "business_profile": {
            "headline": headline,
            "privacy_policy_url": "https://example.com/privacy",
            "terms_of_service_url": "https://example.com/terms",
        },
        "created": created,
        "default_return_url": default_return_url,
        "features": {
            "customer_update": {
                "enabled": True,
                "allowed_updates": ["email", "name", "address", "tax_id"],
            },
            "invoice_history": {"enabled": True},
            "payment_method_update": {"enabled": True},
            "subscription_cancel": {
                "enabled": True,
                "mode": cancel_mode,
                "proration_behavior": "none",
                "cancellation_reason": {
                    "enabled": True,
                    "options": ["too_expensive", "missing_features", "unused", "other"],
                },
            },
            "subscription_update": {
                "enabled": bool(products),
                "default_allowed_updates": ["price", "quantity"] if products else [],
                "products": products,
                "proration_behavior": "none",
            },
            "subscription_pause": {"enabled": True},
        },
        "is_default": is_default,
        "livemode": False,
        "login_page": {"enabled": False, "url": None},
        "metadata": {},
        "name": None,
        "updated": created,
    }


def _facts(sub: dict[str, Any]) -> SubscriptionFacts:
    # The same decisions as GET /me/subscriptions' `portal` object, from the stand-in's copy.
    parsed = stripe_models.Subscription.model_validate(sub)
    items = tuple(
        ItemFacts(
            price_id=item.price.id if item.price else None,
            product_id=item.price.product if item.price else None,
            quantity=item.quantity,
            usage_type=item.price.recurring.usage_type
            if item.price and item.price.recurring
            else None,
            tax_behavior=item.price.tax_behavior if item.price else None,
        )
        for item in parsed.items.data
    )
    return SubscriptionFacts(
        id=parsed.id,
        status=parsed.status or "",
        cancel_at_period_end=parsed.cancel_at_period_end,
        cancel_at=parsed.cancel_at,
        current_period_start=parsed.period_start,
        current_period_end=parsed.period_end,
        pause_collection_behavior=parsed.pause_collection.behavior
        if parsed.pause_collection
        else None,
        collection_method=parsed.collection_method,
        schedule_id=parsed.schedule,
        items=items,
    )


@dataclass(frozen=True, slots=True)
class Offer:
    """What the portal offers for one subscription under one configuration."""

    can_cancel: bool
    cancel_mode: str | None
    can_reactivate: bool
    can_update: bool
    quantity: bool
    prices: tuple[str, ...]
    can_pause: bool
    can_resume: bool
    reasons: tuple[str, ...]


def feature(configuration: dict[str, Any], name: str) -> dict[str, Any]:
    value = (configuration.get("features") or {}).get(name)
    return value if isinstance(value, dict) and value.get("enabled") else {}


def offer(sub: dict[str, Any], configuration: dict[str, Any]) -> Offer:
    facts = _facts(sub)
    caps = portal_capabilities(facts)
    ended = facts.status in ENDED_STATUSES
    cancel = feature(configuration, "subscription_cancel")
    update = feature(configuration, "subscription_update")
    pause = feature(configuration, "subscription_pause")
    allowed = set(update.get("default_allowed_updates") or [])
    product_ids = {item.product_id for item in facts.items}
    offered_products = [p for p in update.get("products") or [] if isinstance(p, dict)]
    quantity = (
        "quantity" in allowed
        and any(
            p.get("product") in product_ids
            and (p.get("adjustable_quantity") or {}).get("enabled", True)
            for p in offered_products
        )
        and all(item.usage_type != "metered" for item in facts.items)
    )
    current_prices = {item.price_id for item in facts.items}
    prices = (
        tuple(
            price
            for p in offered_products
            for price in p.get("prices") or []
            if price not in current_prices
        )
        if "price" in allowed
        else ()
    )
    live_update = (
        caps.can_update and not facts.cancel_at_period_end and facts.status in LIVE_STATUSES
    )
    return Offer(
        can_cancel=bool(cancel) and caps.can_cancel and not facts.cancel_at_period_end,
        cancel_mode=str(cancel.get("mode") or "at_period_end") if cancel else None,
        can_reactivate=bool(cancel) and facts.cancel_at_period_end and not ended,
        can_update=bool(update) and live_update and (quantity or bool(prices)),
        quantity=quantity,
        prices=prices,
        can_pause=bool(pause)
        and flow_refusal("subscription_pause", facts) is None
        and facts.pause_collection_behavior is None,
        can_resume=bool(pause) and facts.pause_collection_behavior is not None and not ended,
        reasons=caps.reasons,
    )


def _updated(
    out: Emitted, before: dict[str, Any], after: dict[str, Any], event: str = ""
) -> dict[str, Any]:
    out.emit(event or "customer.subscription.updated", after, _previous(before, after))
    return after


def cancel_subscription(
    sub: dict[str, Any],
    configuration: dict[str, Any],
    *,
    now: int,
    reason: str | None,
    mode: str,
) -> Emitted:
    terms = offer(sub, configuration)
    if not terms.can_cancel:
        raise ActionRefused("cannot_cancel", "This subscription cannot be canceled here.")
    if mode != terms.cancel_mode:
        raise ActionRefused("cancel_mode", "This portal does not cancel subscriptions that way.")
    after = copy.deepcopy(sub)
    after["canceled_at"] = now
    after["cancellation_details"] = {
        "comment": None,
        "feedback": reason,
        "reason": "cancellation_requested",
    }
    out = Emitted()
    if mode == "immediately":
        after.update(status="canceled", ended_at=now, cancel_at_period_end=False, cancel_at=None)
        out.emit("customer.subscription.deleted", after, None)
        return out
    after.update(cancel_at_period_end=True, cancel_at=_period_end(sub))
    _updated(out, sub, after)
    return out


def reactivate_subscription(sub: dict[str, Any], configuration: dict[str, Any]) -> Emitted:
    if not offer(sub, configuration).can_reactivate:
        raise ActionRefused("cannot_reactivate", "This subscription is not set to cancel.")
    after = copy.deepcopy(sub)
    after.update(cancel_at_period_end=False, cancel_at=None, canceled_at=None)
    after["cancellation_details"] = {"comment": None, "feedback": None, "reason": None}
    out = Emitted()
    _updated(out, sub, after)
    return out


def update_subscription(
    sub: dict[str, Any],
    configuration: dict[str, Any],
    prices: dict[str, dict[str, Any]],
    *,
    quantity: int | None,
    price_id: str | None,
) -> Emitted:
    terms = offer(sub, configuration)
    if not terms.can_update:
        raise ActionRefused("cannot_update", "This subscription cannot be changed here.")
    items = sub["items"]["data"]
    item = copy.deepcopy(items[0])
    if quantity is not None:
        if not terms.quantity:
            raise ActionRefused("quantity_not_adjustable", "The quantity cannot be changed.")
        if not 1 <= quantity <= MAX_QUANTITY:
            raise ActionRefused(
                "invalid_quantity",
                f"The quantity must be between 1 and {MAX_QUANTITY}.",
                status=422,
            )
        item["quantity"] = quantity
    if price_id is not None and price_id != item["price"]["id"]:
        if price_id not in terms.prices or price_id not in prices:
            raise ActionRefused("price_not_offered", "This price is not offered.", status=422)
        target = prices[price_id]
        refusal = flow_refusal(
            "subscription_update_confirm", _facts(sub), target_tax_behavior=target["tax_behavior"]
        )
        if refusal is not None:
            raise ActionRefused(refusal.code, refusal.detail)
        item["price"] = copy.deepcopy(target)
        item["plan"] = None
    if item == items[0]:
        raise ActionRefused("nothing_changed", "Nothing was changed.", status=422)
    after = copy.deepcopy(sub)
    after["items"]["data"] = [item, *copy.deepcopy(items[1:])]
    after["quantity"] = item["quantity"]
    out = Emitted()
    _updated(out, sub, after)
    return out


def pause_collection(sub: dict[str, Any], configuration: dict[str, Any], *, pause: bool) -> Emitted:
    terms = offer(sub, configuration)
    if pause and not terms.can_pause:
        raise ActionRefused("cannot_pause", "This subscription cannot be paused here.")
    if not pause and not terms.can_resume:
        raise ActionRefused("cannot_resume", "This subscription is not paused.")
    after = copy.deepcopy(sub)
    # The portal's pause stops collection (invoices voided) and leaves the status alone.
    after["pause_collection"] = {"behavior": "void", "resumes_at": None} if pause else None
    out = Emitted()
    _updated(out, sub, after)
    return out


def _period_end(sub: dict[str, Any]) -> int | None:
    ends = [item.get("current_period_end") for item in sub["items"]["data"]]
    known = [end for end in ends if isinstance(end, int)]
    return min(known) if known else None


def subscription_object(
    *,
    customer_id: str,
    price: dict[str, Any],
    quantity: int,
    created: int,
    period_start: int,
    period_end: int,
    latest_invoice: str | None,
) -> dict[str, Any]:
    sub_id = new_id("sub")
    return {
        "id": sub_id,
        "object": "subscription",
        "billing_cycle_anchor": period_start,
        "billing_mode": {"type": "flexible"},
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": created,
        "currency": price["currency"],
        "customer": customer_id,
        "default_payment_method": None,
        "ended_at": None,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": new_id("si"),
                    "object": "subscription_item",
                    "created": created,
                    "current_period_end": period_end,
                    "current_period_start": period_start,
                    "metadata": {},
                    "price": copy.deepcopy(price),
                    "quantity": quantity,
                    "subscription": sub_id,
                }
            ],
            "has_more": False,
        },
        "latest_invoice": latest_invoice,
        "livemode": False,
        "metadata": {},
        "pause_collection": None,
        "quantity": quantity,
        "schedule": None,
        "start_date": created,
        "status": "active",
        "trial_end": None,
        "trial_start": None,
    }


def invoice_object(
    *,
    invoice_id: str,
    customer_id: str,
    subscription_id: str,
    amount: int,
    currency: str,
    created: int,
    number: str,
) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "amount_due": amount,
        "amount_paid": amount,
        "amount_remaining": 0,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "customer": customer_id,
        "hosted_invoice_url": None,
        "livemode": False,
        "number": number,
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": subscription_id, "metadata": {}},
        },
        "period_end": created,
        "period_start": created,
        "status": "paid",
        "status_transitions": {
            "finalized_at": created,
            "paid_at": created,
            "marked_uncollectible_at": None,
            "voided_at": None,
        },
        "total": amount,
    }


def card_object(
    *, customer_id: str, number: str, exp_month: int, exp_year: int, created: int
) -> dict[str, Any]:
    return {
        "id": new_id("pm"),
        "object": "payment_method",
        "billing_details": {"address": None, "email": None, "name": None, "phone": None},
        "card": {
            "brand": TEST_CARDS[number],
            "country": "US",
            "exp_month": exp_month,
            "exp_year": exp_year,
            "funding": "credit",
            "last4": number[-4:],
        },
        "created": created,
        "customer": customer_id,
        "livemode": False,
        "metadata": {},
        "type": "card",
    }


def add_card(
    customer: dict[str, Any],
    *,
    number: str,
    exp_month: int,
    exp_year: int,
    now: int,
    this_year: int,
    make_default: bool,
) -> Emitted:
    number = number.replace(" ", "").replace("-", "")
    if number not in TEST_CARDS:
        raise ActionRefused(
            "card_declined",
            "Offline mode accepts only Stripe's test card numbers, such as 4242 4242 4242 4242.",
            status=422,
        )
    if not 1 <= exp_month <= 12 or not this_year <= exp_year <= this_year + 20:
        raise ActionRefused("invalid_expiry", "The expiry date is not valid.", status=422)
    card = card_object(
        customer_id=customer["id"],
        number=number,
        exp_month=exp_month,
        exp_year=exp_year,
        created=now,
    )
    out = Emitted()
    out.emit("payment_method.attached", card)
    if make_default or not customer["invoice_settings"].get("default_payment_method"):
        _set_default(out, customer, card["id"])
    return out


def _set_default(out: Emitted, customer: dict[str, Any], method_id: str) -> None:
    after = copy.deepcopy(customer)
    after["invoice_settings"]["default_payment_method"] = method_id
    out.emit(
        "customer.updated",
        after,
        {"invoice_settings": copy.deepcopy(customer["invoice_settings"])},
    )


def set_default_card(customer: dict[str, Any], method: dict[str, Any]) -> Emitted:
    if method.get("customer") != customer["id"]:
        raise ActionRefused("no_such_card", "There is no such card.", status=404)
    if customer["invoice_settings"].get("default_payment_method") == method["id"]:
        raise ActionRefused("nothing_changed", "This card is already the default.", status=422)
    out = Emitted()
    _set_default(out, customer, method["id"])
    return out


def remove_card(
    customer: dict[str, Any], method: dict[str, Any], *, has_live_subscription: bool
) -> Emitted:
    if method.get("customer") != customer["id"]:
        raise ActionRefused("no_such_card", "There is no such card.", status=404)
    is_default = customer["invoice_settings"].get("default_payment_method") == method["id"]
    if is_default and has_live_subscription:
        # Stripe's portal keeps the default payment method of a customer who still pays.
        raise ActionRefused(
            "default_card_in_use",
            "The default card pays for an active subscription: add or choose another first.",
        )
    detached = copy.deepcopy(method)
    detached["customer"] = None
    out = Emitted()
    out.emit("payment_method.detached", detached, {"customer": customer["id"]})
    if is_default:
        after = copy.deepcopy(customer)
        after["invoice_settings"]["default_payment_method"] = None
        out.emit(
            "customer.updated",
            after,
            {"invoice_settings": copy.deepcopy(customer["invoice_settings"])},
        )
    return out


def update_customer(
    customer: dict[str, Any], configuration: dict[str, Any], fields: dict[str, str]
) -> Emitted:
    allowed = set(feature(configuration, "customer_update").get("allowed_updates") or [])
    after = copy.deepcopy(customer)
    if "email" in fields and "email" in allowed:
        email = fields["email"].strip()
        if email and ("@" not in email or len(email) > 254 or " " in email):
            raise ActionRefused("invalid_email", "The email address is not valid.", status=422)
        after["email"] = email or None
    if "name" in fields and "name" in allowed:
        after["name"] = fields["name"].strip()[:256] or None
    if "address" in allowed and any(key.startswith("address_") for key in fields):
        parts = {
            key: fields.get(f"address_{key}", "").strip()[:200] or None
            for key in ("line1", "line2", "postal_code", "city", "state", "country")
        }
        country = parts["country"]
        if country is not None and (len(country) != 2 or not country.isalpha()):
            raise ActionRefused(
                "invalid_country", "The country must be a two-letter code.", status=422
            )
        parts["country"] = country.upper() if country else None
        after["address"] = parts if any(parts.values()) else None
    previous = _previous(customer, after)
    if not previous:
        raise ActionRefused("nothing_changed", "Nothing was changed.", status=422)
    out = Emitted()
    out.emit("customer.updated", after, previous)
    return out


def add_tax_id(
    customer: dict[str, Any],
    configuration: dict[str, Any],
    *,
    tax_type: str,
    value: str,
    now: int,
) -> Emitted:
    allowed = feature(configuration, "customer_update").get("allowed_updates") or []
    if "tax_id" not in allowed:
        raise ActionRefused("feature_disabled", "Tax ids cannot be changed here.")
    value = value.replace(" ", "").upper()
    bounds = TAX_ID_TYPES.get(tax_type)
    if bounds is None or not value.isalnum() or not bounds[0] <= len(value) <= bounds[1]:
        raise ActionRefused("invalid_tax_id", "The tax id is not valid for its type.", status=422)
    tax_id = {
        "id": new_id("txi"),
        "object": "tax_id",
        "country": value[:2] if tax_type.endswith("_vat") else None,
        "created": now,
        "customer": customer["id"],
        "livemode": False,
        "type": tax_type,
        "value": value,
        "verification": {"status": "pending", "verified_address": None, "verified_name": None},
    }
    out = Emitted()
    out.emit("customer.tax_id.created", tax_id)
    return out


def remove_tax_id(
    customer: dict[str, Any], configuration: dict[str, Any], tax_id: dict[str, Any]
) -> Emitted:
    allowed = feature(configuration, "customer_update").get("allowed_updates") or []
    if "tax_id" not in allowed:
        raise ActionRefused("feature_disabled", "Tax ids cannot be changed here.")
    if tax_id.get("customer") != customer["id"]:
        raise ActionRefused("no_such_tax_id", "There is no such tax id.", status=404)
    out = Emitted()
    out.emit("customer.tax_id.deleted", {**copy.deepcopy(tax_id), "deleted": True})
    return out


def entitlement_summary(
    customer_id: str,
    subscriptions: Iterable[dict[str, Any]],
    products: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Stripe Entitlements' active features of a customer: those of the products of its
    live subscriptions (the demo products list theirs in metadata `features`)."""
    keys: list[str] = []
    for sub in subscriptions:
        if sub.get("status") not in LIVE_STATUSES:
            continue
        for item in sub["items"]["data"]:
            product = products.get(str(item["price"]["product"])) or {}
            for key in str((product.get("metadata") or {}).get("features") or "").split(","):
                if key.strip() and key.strip() not in keys:
                    keys.append(key.strip())
    return {
        "object": "entitlements.active_entitlement_summary",
        "customer": customer_id,
        "livemode": False,
        "entitlements": {
            "object": "list",
            "data": [
                {
                    "id": f"ent_offline_{key}",
                    "object": "entitlements.active_entitlement",
                    "feature": f"feat_offline_{key}",
                    "livemode": False,
                    "lookup_key": key,
                }
                for key in keys
            ],
            "has_more": False,
            "url": "/v1/entitlements/active_entitlements",
        },
    }
