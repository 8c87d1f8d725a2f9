"""What the mirror knows of each kind of Stripe object: the registry of kinds, what each kind
projects into its table's columns, and which events carry it (ARCHITECTURE.md, "Adding a
new mirrored kind").

`KINDS` is the one list of mirrored kinds; every other module (the writes, intake, sync,
reconcile, thin events) reads it rather than naming kinds of its own. Pure: nothing here
touches a session or Stripe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import Table

from portal_service.gateway.base import ListKind, ObjectKind
from portal_service.mirror import stripe_models as sm
from portal_service.mirror import tables

MirrorKind = Literal[
    "customer",
    "subscription",
    "payment_method",
    "invoice",
    "tax_id",
    "billing_portal.configuration",
    "billing_portal.session",
    "entitlements.active_entitlement_summary",
]
"""The keys of `KINDS` (tests/mirror/test_kinds.py checks that both say the same)."""
ENTITLEMENT_SUMMARY: MirrorKind = "entitlements.active_entitlement_summary"

# upsert: the object as sent; delete: a *.deleted event (a tombstone); detach: a
# payment_method.detached event (the method stays, its customer link goes).
Action = Literal["upsert", "delete", "detach"]


def _no_status(_model: Any) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class MirroredKind:
    """One mirrored kind: its table and payload model, its projection, and how Stripe is
    asked for it again (retrieved, listed, named on the command line)."""

    name: MirrorKind
    model: type[tables.MirrorColumns]
    parse: Callable[[dict[str, Any]], BaseModel]
    columns: Callable[[Any, Action], dict[str, Any]]
    # The position of a state on a path that only moves forward (watermark ties).
    status: Callable[[Any], str | None] = _no_status
    # Columns written on insert only: other writers own them afterwards.
    insert_only: frozenset[str] = frozenset()
    # Tables of its children, replaced with it (subscription items, entitlements).
    children: tuple[type[tables.MirrorColumns], ...] = ()
    # Whether Stripe can be asked to settle a same-second tie (portal sessions cannot be
    # retrieved); `retrieve` is the gateway's name for it, None for an entitlement summary,
    # which is listed per customer instead (`Gateway.list_active_entitlements`).
    refetchable: bool = True
    retrieve: ObjectKind | None = None
    # `Gateway.list_pages`' name for it, when sync can list it.
    list_kind: ListKind | None = None
    # `sync --only` / `reconcile --only`; None: neither walks it.
    cli: str | None = None
    list_params: Mapping[str, Any] = field(default_factory=dict)
    # Stripe lists it per customer (GET /v1/customers/{id}/...).
    per_customer: bool = False
    # The list accepts `created[gte]` (`sync --since`).
    filters_by_created: bool = False

    @property
    def table(self) -> Table:
        return tables.table_of(self.model)


def _id_of(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def object_id_of(kind: MirrorKind, obj: Mapping[str, Any]) -> str:
    """The mirror id of an object: its Stripe id, or the customer for an entitlement summary."""
    object_id = _id_of(obj.get("customer") if kind == ENTITLEMENT_SUMMARY else obj.get("id"))
    if object_id is None:
        raise ValueError(f"{kind} object has no id")
    return object_id


def _customer_columns(c: sm.Customer, _action: Action) -> dict[str, Any]:
    # Never app_user_id: only auto-creation, PUT /users/{id}/customer and sync set it.
    return {
        "email": c.email,
        "name": c.name,
        "default_payment_method": c.default_payment_method,
        "address": c.address,
        "tax_exempt": c.tax_exempt,
        "preferred_locales": list(c.preferred_locales),
    }


def _subscription_columns(s: sm.Subscription, _action: Action) -> dict[str, Any]:
    pause = s.pause_collection
    return {
        "customer_id": s.customer,
        "status": s.status,
        "cancel_at_period_end": s.cancel_at_period_end,
        "cancel_at": s.cancel_at,
        "canceled_at": s.canceled_at,
        "ended_at": s.ended_at,
        # Its own period in payloads before 2025-03-31.basil, the earliest item's after.
        "current_period_start": s.period_start,
        "current_period_end": s.period_end,
        "trial_start": s.trial_start,
        "trial_end": s.trial_end,
        "pause_collection_behavior": pause.behavior if pause is not None else None,
        "pause_resumes_at": pause.resumes_at if pause is not None else None,
        "collection_method": s.collection_method,
        "schedule_id": s.schedule,
        "default_payment_method": s.default_payment_method,
        "latest_invoice_id": s.latest_invoice,
    }


ITEM_FACT_COLUMNS = ("price_id", "product_id", "quantity", "usage_type", "tax_behavior")
"""The item columns that access decisions read (access/policy.py `ItemFacts`)."""


def item_columns(item: sm.SubscriptionItem, subscription: sm.Subscription) -> dict[str, Any]:
    """A subscription item's columns, as its `subscription_items` row holds them."""
    price = item.price
    recurring = price.recurring if price is not None else None
    return {
        "subscription_id": subscription.id,
        "price_id": price.id if price is not None else None,
        "product_id": price.product if price is not None else None,
        "quantity": item.quantity,
        "usage_type": recurring.usage_type if recurring is not None else None,
        "tax_behavior": price.tax_behavior if price is not None else None,
        "interval": recurring.interval if recurring is not None else None,
        # Older payloads keep the period on the subscription only.
        "current_period_start": item.current_period_start or subscription.current_period_start,
        "current_period_end": item.current_period_end or subscription.current_period_end,
    }


def _payment_method_columns(p: sm.PaymentMethod, action: Action) -> dict[str, Any]:
    card = p.card
    return {
        # A detach event may still name the customer in older payloads: the event decides.
        "customer_id": None if action == "detach" else p.customer,
        "type": p.type,
        "card_brand": card.brand if card is not None else None,
        "card_last4": card.last4 if card is not None else None,
        "card_exp_month": card.exp_month if card is not None else None,
        "card_exp_year": card.exp_year if card is not None else None,
    }


def _copied(**columns: str) -> Callable[[Any, Action], dict[str, Any]]:
    """Columns that copy one model attribute each, named `column=attribute`."""

    def copy(model: Any, _action: Action) -> dict[str, Any]:
        return {column: getattr(model, attribute) for column, attribute in columns.items()}

    return copy


_invoice_columns = _copied(
    customer_id="customer",
    subscription_id="subscription_id",
    status="status",
    currency="currency",
    amount_due="amount_due",
    amount_paid="amount_paid",
    hosted_invoice_url="hosted_invoice_url",
    paid_at="paid_at",
)
_tax_id_columns = _copied(
    customer_id="customer",
    type="type",
    value="value",
    verification_status="verification_status",
)
_configuration_columns = _copied(
    is_default="is_default",
    active="active",
    name="name",
    default_return_url="default_return_url",
    features="features",
    business_profile="business_profile",
    metadata="metadata",
)


def _session_columns(s: sm.PortalSession, _action: Action) -> dict[str, Any]:
    # Never the url (the model has none), nor app_user_id / caller / idempotency columns,
    # which POST /portal-sessions writes and the event does not know.
    columns: dict[str, Any] = {
        "customer_id": s.customer,
        "configuration_id": s.configuration,
        "locale": s.locale,
        "flow_type": s.flow_type,
        "return_url": s.return_url,
    }
    if s.created is not None:
        columns["created"] = s.created
    return columns


KINDS: dict[MirrorKind, MirroredKind] = {
    entry.name: entry
    for entry in (
        MirroredKind(
            "customer",
            tables.Customer,
            sm.Customer.model_validate,
            _customer_columns,
            retrieve="customer",
            list_kind="customer",
            cli="customers",
            filters_by_created=True,
        ),
        MirroredKind(
            "subscription",
            tables.Subscription,
            sm.Subscription.model_validate,
            _subscription_columns,
            status=lambda s: s.status,
            children=(tables.SubscriptionItem,),
            retrieve="subscription",
            list_kind="subscription",
            cli="subscriptions",
            list_params={"status": "all"},
            filters_by_created=True,
        ),
        MirroredKind(
            "payment_method",
            tables.PaymentMethod,
            sm.PaymentMethod.model_validate,
            _payment_method_columns,
            retrieve="payment_method",
            list_kind="payment_method",
            cli="payment_methods",
            per_customer=True,
        ),
        MirroredKind(
            "invoice",
            tables.Invoice,
            sm.Invoice.model_validate,
            _invoice_columns,
            status=lambda i: i.status,
            retrieve="invoice",
            list_kind="invoice",
            cli="invoices",
            filters_by_created=True,
        ),
        MirroredKind(
            "tax_id",
            tables.TaxId,
            sm.TaxId.model_validate,
            _tax_id_columns,
            retrieve="tax_id",
            list_kind="tax_id",
            cli="tax_ids",
            per_customer=True,
        ),
        MirroredKind(
            "billing_portal.configuration",
            tables.PortalConfiguration,
            sm.PortalConfiguration.model_validate,
            _configuration_columns,
            retrieve="billing_portal.configuration",
            list_kind="billing_portal.configuration",
            cli="portal_configurations",
        ),
        MirroredKind(
            "billing_portal.session",
            tables.PortalSession,
            sm.PortalSession.model_validate,
            _session_columns,
            insert_only=frozenset({"created"}),
            refetchable=False,
        ),
        MirroredKind(
            ENTITLEMENT_SUMMARY,
            tables.EntitlementSummary,
            sm.ActiveEntitlementSummary.model_validate,
            _copied(),
            children=(tables.Entitlement,),
            cli="entitlements",
        ),
    )
}


def kind_named(cli: str) -> MirroredKind:
    """The kind a `--only` name stands for (KeyError when none does)."""
    return _BY_CLI_NAME[cli]


_BY_CLI_NAME = {entry.cli: entry for entry in KINDS.values() if entry.cli is not None}


@dataclass(frozen=True, slots=True)
class EventRoute:
    kind: MirrorKind
    action: Action


_SUBSCRIPTION_EVENTS = (
    "created",
    "updated",
    "paused",
    "resumed",
    "trial_will_end",
    "pending_update_applied",
    "pending_update_expired",
)
_INVOICE_EVENTS = (
    "created",
    "finalized",
    "paid",
    "payment_failed",
    "payment_succeeded",
    "updated",
    "voided",
    "marked_uncollectible",
)

EVENT_ROUTES: dict[str, EventRoute] = {
    "customer.created": EventRoute("customer", "upsert"),
    "customer.updated": EventRoute("customer", "upsert"),
    "customer.deleted": EventRoute("customer", "delete"),
    **{
        f"customer.subscription.{s}": EventRoute("subscription", "upsert")
        for s in _SUBSCRIPTION_EVENTS
    },
    "customer.subscription.deleted": EventRoute("subscription", "delete"),
    "payment_method.attached": EventRoute("payment_method", "upsert"),
    "payment_method.updated": EventRoute("payment_method", "upsert"),
    "payment_method.automatically_updated": EventRoute("payment_method", "upsert"),
    "payment_method.detached": EventRoute("payment_method", "detach"),
    "customer.tax_id.created": EventRoute("tax_id", "upsert"),
    "customer.tax_id.updated": EventRoute("tax_id", "upsert"),
    "customer.tax_id.deleted": EventRoute("tax_id", "delete"),
    **{f"invoice.{s}": EventRoute("invoice", "upsert") for s in _INVOICE_EVENTS},
    "invoice.deleted": EventRoute("invoice", "delete"),
    "billing_portal.configuration.created": EventRoute("billing_portal.configuration", "upsert"),
    "billing_portal.configuration.updated": EventRoute("billing_portal.configuration", "upsert"),
    "billing_portal.session.created": EventRoute("billing_portal.session", "upsert"),
    "entitlements.active_entitlement_summary.updated": EventRoute(ENTITLEMENT_SUMMARY, "upsert"),
}
"""Every event type the mirror projects (README.md, "Pointing Stripe's webhooks at it");
others are recorded `ignored`."""
