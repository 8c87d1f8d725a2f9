"""Offline mode's portal actions on a customer, as Stripe performs them: cards, the
customer's details and tax ids, each as the changed objects and the events Stripe would send.
"""

from __future__ import annotations

import copy
from typing import Any

from portal_service.gateway.offline_objects import (
    TAX_ID_TYPES,
    TEST_CARDS,
    ActionRefused,
    Emitted,
    card_object,
    feature,
    new_id,
    previous_attributes,
)


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


def _set_default(out: Emitted, customer: dict[str, Any], method_id: str | None) -> None:
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
        _set_default(out, customer, None)
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
    previous = previous_attributes(customer, after)
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
