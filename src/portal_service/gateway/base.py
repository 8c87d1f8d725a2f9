"""The gateway interface every other module depends on, and what it returns and raises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from fastapi import Depends, Request

from portal_service.app_state import app_state
from portal_service.errors import StripeError

if TYPE_CHECKING:
    from portal_service.gateway.offline import OfflineGateway

ObjectKind = Literal[
    "customer",
    "subscription",
    "invoice",
    "payment_method",
    "tax_id",
    "price",
    "product",
    "billing_portal.configuration",
    "event",
]


@dataclass(frozen=True, slots=True)
class Fetched:
    """An object read from Stripe, with Stripe's clock at the time of the read."""

    object: dict[str, Any]
    fetched_at: datetime


def active_entitlement_summary(customer_id: str, data: list[dict[str, Any]]) -> dict[str, Any]:
    """Stripe's entitlement listing shaped like an active entitlement summary object."""
    return {
        "object": "entitlements.active_entitlement_summary",
        "customer": customer_id,
        "entitlements": {"object": "list", "data": data, "has_more": False},
    }


class StripeObjectMissing(StripeError):
    """Stripe answered 404 `resource_missing` for the object."""

    status = 404
    code = "stripe_object_missing"
    default_detail = "Stripe has no such object."


class StripeIdempotencyConflict(StripeError):
    """Stripe saw this Idempotency-Key before with other parameters (400 idempotency_error)."""

    default_detail = "Stripe saw this idempotency key with different parameters."


ListKind = Literal[
    "customer",
    "subscription",
    "invoice",
    "payment_method",
    "tax_id",
    "billing_portal.configuration",
    "event",
]
"""What `Gateway.list_pages` can page through (payment methods and tax ids per customer)."""


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a Stripe list, with Stripe's clock (its `Date`) at the time of the read."""

    objects: list[dict[str, Any]]
    fetched_at: datetime


class Gateway(Protocol):
    """What the service needs from Stripe. Errors are DomainErrors: StripeError (Stripe
    refused, 502), StripeObjectMissing (404 from Stripe), StripeUnavailable (network,
    timeout, 5xx or 429 after retries, 503)."""

    @property
    def offline(self) -> bool: ...

    @property
    def stand_in(self) -> OfflineGateway | None:
        """The offline stand-in's own calls (its hosted pages, the demo's objects), when this
        gateway is the stand-in; None with Stripe. Callers ask this instead of isinstance."""
        ...

    async def create_customer(
        self, *, email: str | None, app_user_id: str, idempotency_key: str
    ) -> dict[str, Any]: ...

    async def create_portal_session(
        self, params: dict[str, Any], *, idempotency_key: str | None, service_url: str
    ) -> dict[str, Any]:
        """`params` are Stripe's (customer, return_url, configuration, locale, flow_data).
        `service_url` is this service's base URL as the request reached it: the offline
        gateway's sessions are pages of this service, so their URL must point there;
        Stripe's sessions never do. The returned dict holds the session, its `url`
        included: never store or log it."""
        ...

    async def create_portal_configuration(
        self, params: dict[str, Any], *, idempotency_key: str
    ) -> Fetched:
        """POST /v1/billing_portal/configurations; `params` are Stripe's."""
        ...

    async def update_portal_configuration(
        self, configuration_id: str, params: dict[str, Any], *, idempotency_key: str
    ) -> Fetched:
        """POST /v1/billing_portal/configurations/{id}; `params` are Stripe's."""
        ...

    async def retrieve(self, kind: ObjectKind, object_id: str, *, account: str = "") -> Fetched: ...

    async def list_active_entitlements(self, customer_id: str, *, account: str = "") -> Fetched:
        """`object` is shaped like an active entitlement summary: {customer, entitlements: {data}}."""
        ...

    async def retrieve_thin_event(self, event_id: str, *, account: str = "") -> Fetched:
        """GET /v2/core/events/{id}: a thin event as Stripe holds it (`snapshot_event`,
        `related_object`, `data`), for what its delivery did not carry."""
        ...

    async def list_webhook_endpoints(self) -> list[dict[str, Any]]:
        """Every webhook endpoint of the key's mode (GET /v1/webhook_endpoints, all pages)."""
        ...

    async def create_webhook_endpoint(
        self, params: dict[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """POST /v1/webhook_endpoints; the answer holds the endpoint's `secret`, shown once."""
        ...

    async def aclose(self) -> None: ...

    def list_pages(
        self,
        kind: ListKind,
        *,
        params: dict[str, Any],
        customer: str | None = None,
        account: str = "",
    ) -> AsyncIterator[ListPage]:
        """Stripe's list of `kind`, page after page (newest first, as Stripe lists), each
        fetched only when the previous one has been consumed. `customer` is required for
        payment methods and tax ids. Errors as for every call, raised mid-iteration."""
        ...


async def _gateway(request: Request) -> Gateway:
    return app_state(request).gateway


GatewayDep = Annotated[Gateway, Depends(_gateway)]
