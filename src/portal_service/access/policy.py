"""Access policy and customer-portal capabilities: pure decisions over mirrored subscription facts.

Shared by the /me/* reads and the flow checks of POST /portal-sessions, so both give one answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final


@dataclass(frozen=True, slots=True)
class ItemFacts:
    price_id: str | None
    product_id: str | None
    quantity: int | None
    usage_type: str | None
    tax_behavior: str | None


@dataclass(frozen=True, slots=True)
class SubscriptionFacts:
    id: str
    status: str
    cancel_at_period_end: bool
    cancel_at: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    pause_collection_behavior: str | None
    collection_method: str | None
    schedule_id: str | None
    items: tuple[ItemFacts, ...]
    oldest_unpaid_invoice_created: datetime | None = None


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    past_due_grace_days: int = 0
    access_during_paused_collection: bool = False

    def __post_init__(self) -> None:
        if self.past_due_grace_days < 0:
            raise ValueError("past_due_grace_days must be 0 or more")


@dataclass(frozen=True, slots=True)
class Capabilities:
    can_update: bool
    can_cancel: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    detail: str


# Stripe's enums are open (new statuses appear with new API versions), so access is an
# allow-list: anything not named here, known or not, grants nothing.
_LIVE_STATUSES: Final = frozenset({"active", "trialing"})
_ENDED_STATUSES: Final = frozenset({"canceled", "incomplete_expired"})

# Stable codes, part of the HTTP contract; capability reasons are reported in this order.
NOT_ACTIVE: Final = "not_active"
HAS_SCHEDULE: Final = "has_schedule"
MULTIPLE_PRODUCTS: Final = "multiple_products"
USAGE_BASED: Final = "usage_based"
SEND_INVOICE: Final = "send_invoice"
TAX_BEHAVIOR_MISMATCH: Final = "tax_behavior_mismatch"

# Reasons that take away cancel as well as update; the rest only block updates.
_BLOCKS_CANCEL: Final = frozenset({NOT_ACTIVE, HAS_SCHEDULE})

_CANCEL_ONLY_DETAILS: Final = {
    MULTIPLE_PRODUCTS: (
        "The customer portal cannot update a subscription with more than one product; "
        "it can only cancel it."
    ),
    USAGE_BASED: (
        "The customer portal cannot update a subscription with a usage-based (metered) price; "
        "it can only cancel it."
    ),
    SEND_INVOICE: (
        "The customer portal cannot update a subscription that is paid by sent invoice "
        "(collection_method send_invoice); it can only cancel it."
    ),
}

_CUSTOMER_FLOWS: Final = frozenset({"payment_method_update", "customer_update"})
_FLOW_VERBS: Final = {
    "subscription_cancel": "cancel",
    "subscription_update": "update",
    "subscription_update_confirm": "update",
    "subscription_pause": "pause",
}


def access_until(sub: SubscriptionFacts) -> datetime | None:
    if sub.cancel_at is not None:
        return sub.cancel_at
    if sub.cancel_at_period_end:
        return sub.current_period_end
    return None


def grants_access(sub: SubscriptionFacts, *, policy: AccessPolicy, now: datetime) -> bool:
    if not _status_grants(sub, policy=policy, now=now):
        return False
    # The portal's "pause" leaves the status alone and only sets pause_collection.
    if sub.pause_collection_behavior is not None and not policy.access_during_paused_collection:
        return False
    # customer.subscription.deleted can arrive late (or be lost until reconciliation); the
    # scheduled end is already in the mirror, so access stops on time without it.
    end = access_until(sub)
    return end is None or now < end


def _status_grants(sub: SubscriptionFacts, *, policy: AccessPolicy, now: datetime) -> bool:
    if sub.status in _LIVE_STATUSES:
        return True
    if sub.status != "past_due" or policy.past_due_grace_days == 0:
        return False
    # The unpaid invoice may not be mirrored yet; the period start is the same moment for
    # renewal invoices, which are what usually turns a subscription past_due.
    since = sub.oldest_unpaid_invoice_created or sub.current_period_start
    if since is None:
        # Without an anchor the grace cannot be shown to still run; deny rather than grant forever.
        return False
    return now - since < timedelta(days=policy.past_due_grace_days)


def portal_capabilities(sub: SubscriptionFacts) -> Capabilities:
    reasons = _capability_reasons(sub)
    return Capabilities(
        can_update=not reasons,
        can_cancel=not any(reason in _BLOCKS_CANCEL for reason in reasons),
        reasons=reasons,
    )


def _capability_reasons(sub: SubscriptionFacts) -> tuple[str, ...]:
    reasons: list[str] = []
    if sub.status in _ENDED_STATUSES:
        reasons.append(NOT_ACTIVE)
    if sub.schedule_id is not None:
        reasons.append(HAS_SCHEDULE)
    # A missing product id counts as a value of its own: two items whose products are
    # {prod_A, unknown} cannot be shown to be one product.
    if len({item.product_id for item in sub.items}) > 1:
        reasons.append(MULTIPLE_PRODUCTS)
    if any(item.usage_type == "metered" for item in sub.items):
        reasons.append(USAGE_BASED)
    if sub.collection_method == "send_invoice":
        reasons.append(SEND_INVOICE)
    return tuple(reasons)


def flow_refusal(
    flow_type: str,
    sub: SubscriptionFacts | None,
    *,
    target_tax_behavior: str | None = None,
) -> Refusal | None:
    if flow_type in _CUSTOMER_FLOWS:
        return None
    verb = _FLOW_VERBS.get(flow_type)
    if verb is None:
        raise ValueError(f"unknown portal flow type: {flow_type!r}")
    if sub is None:
        raise ValueError(f"portal flow {flow_type!r} needs a subscription")

    if flow_type == "subscription_pause":
        return _pause_refusal(sub)

    reasons = _capability_reasons(sub)
    if flow_type == "subscription_cancel":
        reasons = tuple(reason for reason in reasons if reason in _BLOCKS_CANCEL)
    if reasons:
        return _capability_refusal(reasons[0], sub, verb=verb)
    if flow_type == "subscription_update_confirm":
        return _tax_behavior_refusal(sub, target_tax_behavior)
    return None


def _pause_refusal(sub: SubscriptionFacts) -> Refusal | None:
    if sub.status not in _LIVE_STATUSES:
        return Refusal(
            NOT_ACTIVE,
            "The customer portal can only pause an active or trialing subscription; "
            f"this one is {sub.status!r}.",
        )
    if sub.schedule_id is not None:
        return _capability_refusal(HAS_SCHEDULE, sub, verb="pause")
    return None


def _capability_refusal(reason: str, sub: SubscriptionFacts, *, verb: str) -> Refusal:
    if reason == NOT_ACTIVE:
        detail = (
            f"The customer portal cannot {verb} a subscription that has already ended "
            f"(status {sub.status!r})."
        )
    elif reason == HAS_SCHEDULE:
        detail = (
            f"The customer portal cannot {verb} a subscription that has a subscription "
            "schedule attached."
        )
    else:
        detail = _CANCEL_ONLY_DETAILS[reason]
    return Refusal(reason, detail)


def _tax_behavior_refusal(sub: SubscriptionFacts, target: str | None) -> Refusal | None:
    # Only a price change is judged: a quantity-only update (no target price) keeps the
    # current price, and Stripe's rule is about switching prices. Stripe refuses any price
    # change from an unspecified tax behavior, whatever the target; a missing value (or no
    # item at all) is judged the same way, so the answer is a clear 409 instead of a
    # failed session or a dead end inside the portal.
    if target is None:
        return None
    currents = {item.tax_behavior for item in sub.items}
    if not sub.items or None in currents or "unspecified" in currents:
        return Refusal(
            TAX_BEHAVIOR_MISMATCH,
            "The customer portal cannot change the price of a subscription whose current "
            "price has no tax behavior set (unspecified).",
        )
    mismatched = sorted(current for current in currents if current and current != target)
    if mismatched:
        return Refusal(
            TAX_BEHAVIOR_MISMATCH,
            "The customer portal can only switch to a price with the same tax behavior: "
            f"the current price is {mismatched[0]!r} and the new one is {target!r}.",
        )
    return None
