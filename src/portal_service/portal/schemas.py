"""Wire schemas of POST /portal-sessions and /users/{app_user_id}/customer (never tables).

Unknown fields are refused: a misspelt option must not silently become Stripe's default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Stripe ids and coupon codes are short printable tokens; 255 is the mirror's column width.
StripeId = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_\-]+$")]
SubscriptionId = Annotated[str, Field(max_length=255, pattern=r"^sub_[A-Za-z0-9_]+$")]
SubscriptionItemId = Annotated[str, Field(max_length=255, pattern=r"^si_[A-Za-z0-9_]+$")]
CustomerId = Annotated[str, Field(max_length=255, pattern=r"^cus_[A-Za-z0-9_]+$")]
AppUserId = Annotated[str, Field(min_length=1, max_length=255)]
AccountId = Annotated[str, Field(max_length=255, pattern=r"^acct_[A-Za-z0-9]+$")]
Url = Annotated[str, Field(min_length=1, max_length=2048)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedirectAfterCompletion(_Strict):
    type: Literal["redirect"]
    return_url: Url = Field(description="Must match PORTAL_RETURN_URL_ALLOWLIST.")


class HostedConfirmationAfterCompletion(_Strict):
    type: Literal["hosted_confirmation"]
    custom_message: Annotated[str, Field(min_length=1, max_length=500)] | None = None


class PortalHomepageAfterCompletion(_Strict):
    type: Literal["portal_homepage"]


AfterCompletion = Annotated[
    RedirectAfterCompletion | HostedConfirmationAfterCompletion | PortalHomepageAfterCompletion,
    Field(discriminator="type"),
]


class PaymentMethodUpdateFlow(_Strict):
    type: Literal["payment_method_update"]
    after_completion: AfterCompletion | None = None


class CustomerUpdateFlow(_Strict):
    type: Literal["customer_update"]
    after_completion: AfterCompletion | None = None


class SubscriptionCancelFlow(_Strict):
    type: Literal["subscription_cancel"]
    subscription_id: SubscriptionId
    retention_coupon: StripeId | None = Field(
        default=None, description="A coupon offered to keep the customer (a retention offer)."
    )
    after_completion: AfterCompletion | None = None


class SubscriptionUpdateFlow(_Strict):
    type: Literal["subscription_update"]
    subscription_id: SubscriptionId
    after_completion: AfterCompletion | None = None


class SubscriptionPauseFlow(_Strict):
    type: Literal["subscription_pause"]
    subscription_id: SubscriptionId
    after_completion: AfterCompletion | None = None


class UpdateConfirmItem(_Strict):
    id: SubscriptionItemId
    price: StripeId | None = None
    quantity: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> UpdateConfirmItem:
        if self.price is None and self.quantity is None:
            raise ValueError("give the new price, the new quantity, or both")
        return self


class UpdateConfirmDiscount(_Strict):
    coupon: StripeId | None = None
    promotion_code: StripeId | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> UpdateConfirmDiscount:
        if (self.coupon is None) == (self.promotion_code is None):
            raise ValueError("give exactly one of coupon or promotion_code")
        return self


class SubscriptionUpdateConfirmFlow(_Strict):
    type: Literal["subscription_update_confirm"]
    subscription_id: SubscriptionId
    # Stripe's portal confirms exactly one item change per session.
    items: Annotated[list[UpdateConfirmItem], Field(min_length=1, max_length=1)]
    discounts: Annotated[list[UpdateConfirmDiscount], Field(max_length=20)] | None = None
    after_completion: AfterCompletion | None = None


FlowRequest = (
    PaymentMethodUpdateFlow
    | CustomerUpdateFlow
    | SubscriptionCancelFlow
    | SubscriptionUpdateFlow
    | SubscriptionPauseFlow
    | SubscriptionUpdateConfirmFlow
)
Flow = Annotated[FlowRequest, Field(discriminator="type")]

SUBSCRIPTION_FLOWS = (
    SubscriptionCancelFlow,
    SubscriptionUpdateFlow,
    SubscriptionPauseFlow,
    SubscriptionUpdateConfirmFlow,
)


class PortalSessionRequest(_Strict):
    return_url: Url | None = Field(
        default=None,
        description="Where the portal sends the customer back; must match "
        "PORTAL_RETURN_URL_ALLOWLIST. Default: PORTAL_DEFAULT_RETURN_URL, then the "
        "configuration's default_return_url.",
        examples=["https://app.example.com/account"],
    )
    locale: Annotated[str, Field(min_length=1, max_length=16)] | None = Field(
        default=None,
        description="One of Stripe's portal locales or `auto`; negotiated from "
        "Accept-Language when absent.",
        examples=["fr"],
    )
    configuration: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        default=None,
        description="A configuration name from PORTAL_CONFIG_FILE or a `bpc_` id it declares "
        "(API keys: any `bpc_` id).",
    )
    flow: Flow | None = None
    customer_id: CustomerId | None = Field(default=None, description="API-key callers only.")
    app_user_id: AppUserId | None = Field(default=None, description="API-key callers only.")
    on_behalf_of: AccountId | None = Field(
        default=None,
        description="API-key callers only (Connect): the connected account the portal acts "
        "for. Default: the configuration's `on_behalf_of` in PORTAL_CONFIG_FILE.",
        examples=["acct_123"],
    )


class PortalSessionOut(BaseModel):
    id: str = Field(examples=["bps_123"])
    url: str = Field(
        description="The portal link: a short-lived bearer credential. Redirect to it; "
        "never store or log it."
    )
    customer_id: str
    configuration_id: str | None
    locale: str | None
    return_url: str | None
    flow_type: str | None
    livemode: bool
    created_at: datetime


class CustomerLinkRequest(_Strict):
    customer_id: CustomerId


class CustomerLinkOut(BaseModel):
    app_user_id: str
    customer_id: str
    email: str | None
    livemode: bool
    previous_customer_id: str | None = Field(
        default=None, description="The customer this user was linked to before, if another."
    )
