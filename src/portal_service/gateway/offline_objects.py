"""Offline mode's Stripe objects: the stand-in's customers, portal configurations,
subscriptions, invoices, cards and events as Stripe builds them, and what the portal's
actions share (ActionRefused, Emitted; the actions are offline_subscriptions.py and
offline_customers.py).

Objects have the shape of the pinned API version (2026-10-28.endive: billing periods on the
subscription items, an invoice's subscription under `parent.subscription_details`).
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

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


def previous_attributes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
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


def feature(configuration: dict[str, Any], name: str) -> dict[str, Any]:
    value = (configuration.get("features") or {}).get(name)
    return value if isinstance(value, dict) and value.get("enabled") else {}


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
