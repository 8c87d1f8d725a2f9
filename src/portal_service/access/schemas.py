"""Response bodies of the access routes: what apps see of the mirror (never `raw`, never a table)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from portal_service.pagination import Page


class Schema(BaseModel):
    # Responses are built from our own rows; a typo'd field must fail in tests, not vanish.
    model_config = ConfigDict(extra="forbid")


class Address(BaseModel):
    # Stripe's address; unknown keys a newer API version adds are dropped, not refused.
    model_config = ConfigDict(extra="ignore")

    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2")


class CustomerTaxId(Schema):
    id: str = Field(examples=["txi_123"])
    type: str | None = Field(examples=["eu_vat"])
    value: str | None = Field(examples=["DE123456789"])
    verification_status: str | None = Field(
        description="`pending`, `verified`, `unverified` or `unavailable`", examples=["verified"]
    )


class BillingCustomer(Schema):
    """The caller's Stripe customer as mirrored."""

    id: str = Field(examples=["cus_123"])
    email: str | None
    name: str | None
    address: Address | None
    preferred_locales: list[str]
    tax_exempt: str | None = Field(description="`none`, `exempt` or `reverse`")
    default_payment_method: str | None = Field(
        description="Id of the customer's default payment method for invoices."
    )
    livemode: bool
    created_at: datetime | None
    tax_ids: list[CustomerTaxId]


class BillingSubscriptionItem(Schema):
    id: str = Field(examples=["si_123"])
    price_id: str | None = Field(examples=["price_123"])
    product_id: str | None = Field(examples=["prod_123"])
    quantity: int | None = Field(description="Null for metered (usage-based) prices.")
    usage_type: str | None = Field(description="`licensed` or `metered`")
    interval: str | None = Field(description="`day`, `week`, `month` or `year`")
    tax_behavior: str | None = Field(description="`inclusive`, `exclusive` or `unspecified`")
    current_period_start: datetime | None
    current_period_end: datetime | None


class PauseCollection(Schema):
    behavior: str = Field(description="`keep_as_draft`, `mark_uncollectible` or `void`")
    resumes_at: datetime | None


class PortalCapabilities(Schema):
    """What the hosted customer portal can do to this subscription."""

    can_update: bool
    can_cancel: bool
    reasons: list[str] = Field(
        description=(
            "Why an action is unavailable: `not_active`, `has_schedule`, "
            "`multiple_products`, `usage_based`, `send_invoice`."
        ),
        examples=[["multiple_products"]],
    )


class BillingSubscription(Schema):
    id: str = Field(examples=["sub_123"])
    status: str | None = Field(
        description=(
            "`incomplete`, `incomplete_expired`, `trialing`, `active`, `past_due`, "
            "`canceled`, `unpaid` or `paused`"
        )
    )
    items: list[BillingSubscriptionItem]
    current_period_start: datetime | None
    current_period_end: datetime | None
    trial_start: datetime | None
    trial_end: datetime | None
    cancel_at_period_end: bool
    cancel_at: datetime | None
    canceled_at: datetime | None
    ended_at: datetime | None
    pause_collection: PauseCollection | None = Field(
        description="Set while collection is paused (the portal's pause); the status is unchanged."
    )
    collection_method: str | None = Field(description="`charge_automatically` or `send_invoice`")
    schedule_id: str | None
    created_at: datetime | None
    has_access: bool = Field(description="Whether this subscription grants access now.")
    access_until: datetime | None = Field(
        description="When access ends as scheduled (a cancellation); null while ongoing."
    )
    portal: PortalCapabilities


class BillingSubscriptionPage(Page[BillingSubscription]):
    pass


class BillingInvoice(Schema):
    id: str = Field(examples=["in_123"])
    status: str | None = Field(description="`draft`, `open`, `paid`, `uncollectible` or `void`")
    currency: str | None = Field(examples=["eur"])
    amount_due: int | None = Field(description="In the currency's minor unit.")
    amount_paid: int | None = Field(description="In the currency's minor unit.")
    hosted_invoice_url: str | None = Field(
        description="Stripe's page to view and pay the invoice; null for drafts."
    )
    subscription_id: str | None
    created_at: datetime | None
    paid_at: datetime | None


class BillingInvoicePage(Page[BillingInvoice]):
    pass


class CardDetails(Schema):
    brand: str | None = Field(examples=["visa"])
    last4: str | None = Field(examples=["4242"])
    exp_month: int | None = Field(examples=[12])
    exp_year: int | None = Field(examples=[2030])


class BillingPaymentMethod(Schema):
    id: str = Field(examples=["pm_123"])
    type: str | None = Field(examples=["card"])
    card: CardDetails | None = Field(description="Set for cards only.")
    is_default: bool = Field(description="The customer's default payment method for invoices.")
    created_at: datetime | None


class BillingPaymentMethodPage(Page[BillingPaymentMethod]):
    pass


class EntitledProduct(Schema):
    product_id: str | None = Field(examples=["prod_123"])
    price_id: str | None = Field(examples=["price_123"])
    subscription_id: str = Field(examples=["sub_123"])
    status: str | None = Field(examples=["active"])
    quantity: int | None
    access_until: datetime | None = Field(
        description="When access ends as scheduled (a cancellation); null while ongoing."
    )


class Entitlements(Schema):
    """What a customer may use now."""

    customer_id: str | None = Field(description="Null when the user has no billing customer.")
    has_access: bool
    products: list[EntitledProduct] = Field(
        description="One entry per subscription item that grants access now."
    )
    features: list[str] = Field(
        description="Lookup keys of the customer's active Stripe Entitlements features, sorted.",
        examples=[["premium-export"]],
    )
    # Absent rather than null when there is none: the schema says "optional date-time".
    evaluated_at: Annotated[
        datetime | None, WithJsonSchema({"type": "string", "format": "date-time"})
    ] = Field(
        default=None,
        description=(
            "When this answer was computed; not part of the ETag. Absent from the empty "
            "answer of a user without a billing customer."
        ),
    )
