"""Offline mode's portal actions on a subscription, as Stripe performs them: what the portal
offers for one subscription under one configuration, and the changed subscription with the
events Stripe would send.

What may be done with a subscription at all is not decided here: the stand-in's portal
answers like GET /me/subscriptions' `portal` object, and those rules are the caller's
(portal/offline_rules.py hands them in as `PortalRules`), so the gateway imports no layer
above it (ARCHITECTURE.md, "Rules of dependency").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

from portal_service.gateway.offline_objects import (
    ENDED_STATUSES,
    LIVE_STATUSES,
    MAX_QUANTITY,
    ActionRefused,
    Emitted,
    feature,
    previous_attributes,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the portal's rules say of one subscription, with the facts of it they read."""

    status: str
    cancel_at_period_end: bool
    paused: bool
    product_ids: frozenset[str | None]
    price_ids: frozenset[str | None]
    metered: bool
    can_update: bool
    can_cancel: bool
    can_pause: bool
    reasons: tuple[str, ...]


class PortalRules(Protocol):
    """The portal's rules, handed to the stand-in by its caller."""

    def verdict(self, sub: dict[str, Any]) -> Verdict: ...

    def price_change_refusal(
        self, sub: dict[str, Any], *, tax_behavior: str | None
    ) -> ActionRefused | None: ...


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


def offer(sub: dict[str, Any], configuration: dict[str, Any], *, rules: PortalRules) -> Offer:
    seen = rules.verdict(sub)
    ended = seen.status in ENDED_STATUSES
    cancel = feature(configuration, "subscription_cancel")
    update = feature(configuration, "subscription_update")
    pause = feature(configuration, "subscription_pause")
    allowed = set(update.get("default_allowed_updates") or [])
    offered_products = [p for p in update.get("products") or [] if isinstance(p, dict)]
    quantity = (
        "quantity" in allowed
        and any(
            p.get("product") in seen.product_ids
            and (p.get("adjustable_quantity") or {}).get("enabled", True)
            for p in offered_products
        )
        and not seen.metered
    )
    prices = (
        tuple(
            price
            for p in offered_products
            for price in p.get("prices") or []
            if price not in seen.price_ids
        )
        if "price" in allowed
        else ()
    )
    live_update = seen.can_update and not seen.cancel_at_period_end and seen.status in LIVE_STATUSES
    return Offer(
        can_cancel=bool(cancel) and seen.can_cancel and not seen.cancel_at_period_end,
        cancel_mode=str(cancel.get("mode") or "at_period_end") if cancel else None,
        can_reactivate=bool(cancel) and seen.cancel_at_period_end and not ended,
        can_update=bool(update) and live_update and (quantity or bool(prices)),
        quantity=quantity,
        prices=prices,
        can_pause=bool(pause) and seen.can_pause and not seen.paused,
        can_resume=bool(pause) and seen.paused and not ended,
        reasons=seen.reasons,
    )


def _updated(
    out: Emitted, before: dict[str, Any], after: dict[str, Any], event: str = ""
) -> dict[str, Any]:
    out.emit(event or "customer.subscription.updated", after, previous_attributes(before, after))
    return after


def cancel_subscription(
    sub: dict[str, Any],
    configuration: dict[str, Any],
    *,
    rules: PortalRules,
    now: int,
    reason: str | None,
    mode: str,
) -> Emitted:
    terms = offer(sub, configuration, rules=rules)
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


def reactivate_subscription(
    sub: dict[str, Any], configuration: dict[str, Any], *, rules: PortalRules
) -> Emitted:
    if not offer(sub, configuration, rules=rules).can_reactivate:
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
    rules: PortalRules,
    quantity: int | None,
    price_id: str | None,
) -> Emitted:
    terms = offer(sub, configuration, rules=rules)
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
        refused = rules.price_change_refusal(sub, tax_behavior=target["tax_behavior"])
        if refused is not None:
            raise refused
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


def pause_collection(
    sub: dict[str, Any], configuration: dict[str, Any], *, rules: PortalRules, pause: bool
) -> Emitted:
    terms = offer(sub, configuration, rules=rules)
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
