"""Typed, forgiving views of the Stripe objects the mirror reads, valid on both sides of 2025-03-31.basil."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

# Re-exported: the mirror's callers convert payloads with it (it lives with the gateway).
from portal_service.gateway.jsonable import to_jsonable as to_jsonable

_PORTAL_SESSION = "billing_portal.session"


def _to_utc(value: Any) -> Any:
    # bool is an int subclass; `true` is never a timestamp.
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, tz=dt.UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"timestamp {value} is out of range") from exc
    if isinstance(value, dt.datetime):
        if value.utcoffset() is None:
            raise ValueError("naive datetime: the zone is unknown")
        return value.astimezone(dt.UTC)
    raise ValueError("expected a unix timestamp in seconds")


def _id_of(value: Any) -> Any:
    if isinstance(value, Mapping):
        ident = value.get("id")
        if isinstance(ident, str) and ident:
            return ident
        raise ValueError("expanded object has no id")
    return value


# Stripe sends times as unix seconds; the mirror stores aware UTC datetimes.
StripeTimestamp = Annotated[dt.datetime, BeforeValidator(_to_utc)]
# A reference is an id unless the request expanded it into the object; the mirror
# stores only the id either way.
ExpandableId = Annotated[str, BeforeValidator(_id_of)]


class StripeModel(BaseModel):
    # Stripe adds fields in every API version, and payloads are parsed snapshots.
    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        # Stripe writes `null` for unset values and which fields are nullable moves
        # between API versions: a null takes the field's default instead of failing.
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value is not None}
        return data


T = TypeVar("T", bound=BaseModel)


class StripeList(StripeModel, Generic[T]):
    data: list[T] = Field(default_factory=list)
    has_more: bool = False


class EventData(StripeModel):
    object: dict[str, Any]
    previous_attributes: dict[str, Any] | None = None


class EventRequest(StripeModel):
    id: str | None = None
    idempotency_key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_bare_id(cls, data: Any) -> Any:
        # API versions before 2017-05-25 sent `request` as a bare request id.
        return {"id": data} if isinstance(data, str) else data


class Event(StripeModel):
    # type, created and data are required: without them the body is not an event
    # (the webhook answers invalid_payload) and ordering has nothing to compare.
    id: str
    type: str
    created: StripeTimestamp
    data: EventData
    livemode: bool = False
    api_version: str | None = None
    # Connect events carry the connected account; '' is the platform, as in the tables.
    account: str = ""
    request: EventRequest | None = None


class CustomerInvoiceSettings(StripeModel):
    default_payment_method: ExpandableId | None = None


class Customer(StripeModel):
    id: str
    email: str | None = None
    name: str | None = None
    # A deleted customer is `{"id", "object": "customer", "deleted": true}` and nothing else.
    deleted: bool = False
    address: dict[str, Any] | None = None
    tax_exempt: str | None = None
    preferred_locales: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    invoice_settings: CustomerInvoiceSettings = Field(default_factory=CustomerInvoiceSettings)
    created: StripeTimestamp | None = None
    livemode: bool = False

    @property
    def default_payment_method(self) -> str | None:
        return self.invoice_settings.default_payment_method


class PriceRecurring(StripeModel):
    interval: str | None = None
    usage_type: str | None = None


class Price(StripeModel):
    id: str
    product: ExpandableId | None = None
    recurring: PriceRecurring | None = None
    tax_behavior: str | None = None
    currency: str | None = None
    unit_amount: int | None = None


class SubscriptionItem(StripeModel):
    id: str
    price: Price | None = None
    # null for metered prices
    quantity: int | None = None
    # Present from 2025-03-31.basil on; older payloads keep the period on the subscription.
    current_period_start: StripeTimestamp | None = None
    current_period_end: StripeTimestamp | None = None
    created: StripeTimestamp | None = None


class PauseCollection(StripeModel):
    behavior: str | None = None
    resumes_at: StripeTimestamp | None = None


class Subscription(StripeModel):
    id: str
    customer: ExpandableId | None = None
    status: str | None = None
    cancel_at_period_end: bool = False
    cancel_at: StripeTimestamp | None = None
    canceled_at: StripeTimestamp | None = None
    ended_at: StripeTimestamp | None = None
    # Only in payloads before 2025-03-31.basil; read period_start/period_end instead.
    current_period_start: StripeTimestamp | None = None
    current_period_end: StripeTimestamp | None = None
    trial_start: StripeTimestamp | None = None
    trial_end: StripeTimestamp | None = None
    pause_collection: PauseCollection | None = None
    collection_method: str | None = None
    schedule: ExpandableId | None = None
    default_payment_method: ExpandableId | None = None
    latest_invoice: ExpandableId | None = None
    items: StripeList[SubscriptionItem] = Field(default_factory=StripeList[SubscriptionItem])
    created: StripeTimestamp | None = None
    livemode: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)

    # Items can sit on different periods (flexible billing mode); the earliest is
    # the one that comes due first, which is what access and renewal checks need.
    @property
    def period_start(self) -> dt.datetime | None:
        if self.current_period_start is not None:
            return self.current_period_start
        starts = [i.current_period_start for i in self.items.data if i.current_period_start]
        return min(starts, default=None)

    @property
    def period_end(self) -> dt.datetime | None:
        if self.current_period_end is not None:
            return self.current_period_end
        ends = [i.current_period_end for i in self.items.data if i.current_period_end]
        return min(ends, default=None)


class PaymentMethodCard(StripeModel):
    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None


class PaymentMethod(StripeModel):
    id: str
    # null once the payment method is detached
    customer: ExpandableId | None = None
    type: str | None = None
    card: PaymentMethodCard | None = None
    created: StripeTimestamp | None = None
    livemode: bool = False


class InvoiceStatusTransitions(StripeModel):
    paid_at: StripeTimestamp | None = None


class InvoiceSubscriptionDetails(StripeModel):
    subscription: ExpandableId | None = None


class InvoiceParent(StripeModel):
    type: str | None = None
    subscription_details: InvoiceSubscriptionDetails | None = None


class Invoice(StripeModel):
    id: str
    customer: ExpandableId | None = None
    status: str | None = None
    currency: str | None = None
    amount_due: int = 0
    amount_paid: int = 0
    hosted_invoice_url: str | None = None
    status_transitions: InvoiceStatusTransitions = Field(default_factory=InvoiceStatusTransitions)
    created: StripeTimestamp | None = None
    livemode: bool = False
    # Before 2025-03-31.basil; since then the link lives under parent.subscription_details.
    subscription: ExpandableId | None = None
    parent: InvoiceParent | None = None

    @property
    def subscription_id(self) -> str | None:
        details = self.parent.subscription_details if self.parent is not None else None
        if details is not None and details.subscription is not None:
            return details.subscription
        return self.subscription

    @property
    def paid_at(self) -> dt.datetime | None:
        return self.status_transitions.paid_at


class TaxIdVerification(StripeModel):
    status: str | None = None


class TaxId(StripeModel):
    id: str
    customer: ExpandableId | None = None
    type: str | None = None
    value: str | None = None
    verification: TaxIdVerification | None = None
    created: StripeTimestamp | None = None
    livemode: bool = False

    @property
    def verification_status(self) -> str | None:
        return self.verification.status if self.verification is not None else None


class PortalConfiguration(StripeModel):
    id: str
    is_default: bool = False
    # Stripe creates configurations active; only an explicit false deactivates one.
    active: bool = True
    name: str | None = None
    default_return_url: str | None = None
    features: dict[str, Any] = Field(default_factory=dict)
    business_profile: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    created: StripeTimestamp | None = None
    livemode: bool = False


class PortalSession(StripeModel):
    # Deliberately no `url`: it is a bearer credential, and a field nobody declares
    # cannot end up in a table by accident (extra="ignore" drops it).
    id: str
    customer: ExpandableId | None = None
    configuration: ExpandableId | None = None
    locale: str | None = None
    flow: dict[str, Any] | None = None
    return_url: str | None = None
    created: StripeTimestamp | None = None
    livemode: bool = False

    @property
    def flow_type(self) -> str | None:
        kind = self.flow.get("type") if self.flow is not None else None
        return kind if isinstance(kind, str) else None


class ActiveEntitlement(StripeModel):
    id: str
    feature: ExpandableId | None = None
    lookup_key: str | None = None
    livemode: bool = False


class ActiveEntitlementSummary(StripeModel):
    # The summary has no id of its own: the customer is its key.
    customer: str
    livemode: bool = False
    entitlements: StripeList[ActiveEntitlement] = Field(
        default_factory=StripeList[ActiveEntitlement]
    )


def _is_session(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("object") == _PORTAL_SESSION


# What JSON decodes to besides containers: immutable, so shared rather than copied
# (deepcopy's per-call cost made redaction the costliest step of a webhook).
_SCALARS = (str, int, float, bool, type(None))


def _is_session_event(event: Mapping[str, Any]) -> bool:
    data = event.get("data")
    # An event may omit `object` (intake accepts that as an event), so default to it.
    if event.get("object", "event") != "event" or not isinstance(data, dict):
        return False
    event_type = event.get("type")
    about_session = isinstance(event_type, str) and event_type.startswith(_PORTAL_SESSION + ".")
    return about_session or _is_session(data.get("object"))


def _redact(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        out = {key: _redact(item) for key, item in value.items()}
        if _is_session(out):
            out.pop("url", None)
        # An event about a session may also carry the session's old values, which
        # have no `object` key of their own to recognise them by; its type says what
        # the object is even if the object forgot to.
        if _is_session_event(out):
            data = out["data"]
            for part in (data.get("object"), data.get("previous_attributes")):
                if isinstance(part, dict):
                    part.pop("url", None)
        return out
    if isinstance(value, list):
        return [_redact(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_redact(item) for item in value)
    return copy.deepcopy(value)


def redact_session_urls(payload: dict[str, Any]) -> dict[str, Any]:
    redacted: dict[str, Any] = _redact(payload)
    return redacted
