"""Stripe objects as webhooks carry them, in both shapes around 2025-03-31.basil.

Import as `from mirror.stripe_payloads import ...` (tests/ is on the path).
"""

from __future__ import annotations

import datetime as dt
from email.utils import formatdate
from typing import Any, Literal

Shape = Literal["old", "new"]

CREATED = 1_730_000_000  # 2024-10-27T03:33:20Z
PERIOD_START = 1_730_419_200  # 2024-11-01T00:00:00Z
PERIOD_END = 1_733_011_200  # 2024-12-01T00:00:00Z


def utc(ts: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def http_date(ts: int) -> str:
    """An HTTP `Date` header value, as Stripe's responses carry."""
    return formatdate(ts, usegmt=True)


def price(
    price_id: str = "price_pro", product: str = "prod_pro", **overrides: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": price_id,
        "object": "price",
        "active": True,
        "currency": "eur",
        "livemode": False,
        "product": product,
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        "tax_behavior": "exclusive",
        "type": "recurring",
        "unit_amount": 1500,
        "unit_amount_decimal": "1500",
    }
    body.update(overrides)
    return body


def item(
    item_id: str = "si_1",
    *,
    subscription_id: str = "sub_1",
    price_id: str = "price_pro",
    product: str = "prod_pro",
    quantity: int | None = 1,
    shape: Shape = "new",
    period_start: int = PERIOD_START,
    period_end: int = PERIOD_END,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": item_id,
        "object": "subscription_item",
        "created": CREATED,
        "metadata": {},
        "price": price(price_id, product),
        "quantity": quantity,
        "subscription": subscription_id,
    }
    if shape == "new":
        body["current_period_start"] = period_start
        body["current_period_end"] = period_end
    return body


def subscription(
    sub_id: str = "sub_1",
    *,
    customer: str = "cus_1",
    status: str = "active",
    shape: Shape = "new",
    items: list[dict[str, Any]] | None = None,
    period_start: int = PERIOD_START,
    period_end: int = PERIOD_END,
    **overrides: Any,
) -> dict[str, Any]:
    if items is None:
        items = [
            item(
                subscription_id=sub_id,
                shape=shape,
                period_start=period_start,
                period_end=period_end,
            )
        ]
    body: dict[str, Any] = {
        "id": sub_id,
        "object": "subscription",
        "billing_cycle_anchor": period_start,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "collection_method": "charge_automatically",
        "created": CREATED,
        "currency": "eur",
        "customer": customer,
        "default_payment_method": None,
        "ended_at": None,
        "items": {
            "object": "list",
            "data": items,
            "has_more": False,
            "total_count": len(items),
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        "latest_invoice": None,
        "livemode": False,
        "metadata": {},
        "pause_collection": None,
        "schedule": None,
        "start_date": CREATED,
        "status": status,
        "trial_end": None,
        "trial_start": None,
    }
    if shape == "old":
        body["current_period_start"] = period_start
        body["current_period_end"] = period_end
        body["discount"] = None
    else:
        body["discounts"] = []
        body["billing_mode"] = {"type": "flexible"}
    body.update(overrides)
    return body


def customer(cus_id: str = "cus_1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": cus_id,
        "object": "customer",
        "address": {"country": "FR", "city": "Paris"},
        "created": CREATED,
        "email": "ada@example.com",
        "invoice_settings": {"default_payment_method": None},
        "livemode": False,
        "metadata": {},
        "name": "Ada",
        "preferred_locales": ["fr"],
        "tax_exempt": "none",
    }
    body.update(overrides)
    return body


def invoice(
    in_id: str = "in_1",
    *,
    customer: str = "cus_1",
    subscription: str | None = "sub_1",
    status: str = "open",
    shape: Shape = "new",
    paid_at: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": in_id,
        "object": "invoice",
        "amount_due": 1500,
        "amount_paid": 1500 if status == "paid" else 0,
        "created": CREATED,
        "currency": "eur",
        "customer": customer,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/{in_id}",
        "livemode": False,
        "status": status,
        "status_transitions": {"paid_at": paid_at, "finalized_at": None},
    }
    if shape == "old":
        body["subscription"] = subscription
        body["paid"] = status == "paid"
    else:
        body["parent"] = (
            {
                "type": "subscription_details",
                "subscription_details": {"subscription": subscription, "metadata": {}},
            }
            if subscription is not None
            else None
        )
    body.update(overrides)
    return body


def payment_method(
    pm_id: str = "pm_1", *, customer: str | None = "cus_1", **overrides: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": pm_id,
        "object": "payment_method",
        "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030},
        "created": CREATED,
        "customer": customer,
        "livemode": False,
        "type": "card",
    }
    body.update(overrides)
    return body


def tax_id(txi_id: str = "txi_1", *, customer: str = "cus_1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": txi_id,
        "object": "tax_id",
        "country": "FR",
        "created": CREATED,
        "customer": customer,
        "livemode": False,
        "type": "eu_vat",
        "value": "FR12345678901",
        "verification": {"status": "pending", "verified_address": None, "verified_name": None},
    }
    body.update(overrides)
    return body


def portal_configuration(bpc_id: str = "bpc_1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": bpc_id,
        "object": "billing_portal.configuration",
        "active": True,
        "business_profile": {"headline": "Acme", "privacy_policy_url": None},
        "created": CREATED,
        "default_return_url": "https://app.example.com/account",
        "features": {"invoice_history": {"enabled": True}},
        "is_default": True,
        "livemode": False,
        "metadata": {"plan": "pro"},
        "name": "Default",
    }
    body.update(overrides)
    return body


SESSION_URL = "https://billing.stripe.com/p/session/test_YWNjdF9zZWNyZXQ"


def portal_session(
    bps_id: str = "bps_1", *, customer: str = "cus_1", **overrides: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": bps_id,
        "object": "billing_portal.session",
        "configuration": "bpc_1",
        "created": CREATED,
        "customer": customer,
        "flow": {"type": "subscription_cancel", "subscription_cancel": {"subscription": "sub_1"}},
        "livemode": False,
        "locale": "fr",
        "on_behalf_of": None,
        "return_url": "https://app.example.com/account",
        "url": SESSION_URL,
    }
    body.update(overrides)
    return body


def entitlement_summary(customer: str = "cus_1", *features: str) -> dict[str, Any]:
    return {
        "object": "entitlements.active_entitlement_summary",
        "customer": customer,
        "livemode": False,
        "entitlements": {
            "object": "list",
            "data": [
                {
                    "id": f"ent_{customer}_{key}",
                    "object": "entitlements.active_entitlement",
                    "feature": f"feat_{key}",
                    "livemode": False,
                    "lookup_key": key,
                }
                for key in features
            ],
            "has_more": False,
            "url": "/v1/customer/cus_1/entitlements",
        },
    }
