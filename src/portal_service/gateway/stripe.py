"""The real gateway: the official SDK's StripeClient over its async httpx transport."""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import stripe

from portal_service.config import Settings
from portal_service.db import utcnow
from portal_service.errors import DomainError, StripeError, StripeUnavailable
from portal_service.gateway.base import (
    Fetched,
    ListKind,
    ListPage,
    ObjectKind,
    StripeIdempotencyConflict,
    StripeObjectMissing,
    active_entitlement_summary,
)
from portal_service.gateway.jsonable import to_jsonable
from portal_service.ops.logging import get_logger
from portal_service.ops.metrics import STRIPE_REQUESTS

T = TypeVar("T")
log = get_logger("portal_service.gateway")
# Used when Stripe's 429 carries no Retry-After of its own.
DEFAULT_RETRY_AFTER_SECONDS = "2"


def _stripe_date(obj: stripe.StripeObject) -> datetime:
    """Stripe's `Date` header of the response that carried `obj`; the local clock without one."""
    response = obj.last_response
    headers = response.headers if response is not None else {}
    for name, value in headers.items():
        if name.lower() == "date":
            try:
                return email.utils.parsedate_to_datetime(value).astimezone(UTC)
            except (TypeError, ValueError):
                break
    return utcnow()


def _plain(obj: stripe.StripeObject) -> dict[str, Any]:
    """The SDK object as the JSON Stripe sent (to_jsonable: Decimals as Stripe writes them)."""
    plain: dict[str, Any] = to_jsonable(obj.to_dict())
    return plain


def _fetched(obj: stripe.StripeObject) -> Fetched:
    return Fetched(object=_plain(obj), fetched_at=_stripe_date(obj))


def _sdk_params(params: dict[str, Any]) -> Any:
    # Any: the SDK types each method's params as its own TypedDict; ours are Stripe's JSON
    # parameters as the callers build them (portal/, mirror/), checked by Stripe itself.
    return params


def _account_options(account: str) -> Any:
    # Any: the SDK types each method's options as its own TypedDict.
    return {"stripe_account": account} if account else {}


class StripeGateway:
    def __init__(self, settings: Settings) -> None:
        assert settings.stripe_api_key is not None  # noqa: S101 - offline mode uses OfflineGateway
        self._http = stripe.HTTPXClient(timeout=settings.stripe_timeout)
        api_base = settings.stripe_api_base
        self._client = stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            stripe_version=settings.stripe_api_version,
            max_network_retries=settings.stripe_max_network_retries,
            base_addresses={"api": api_base.rstrip("/")} if api_base else {},
            http_client=self._http,
        )

    @property
    def offline(self) -> bool:
        return False

    @property
    def stand_in(self) -> None:
        return None

    @property
    def client(self) -> stripe.StripeClient:
        return self._client

    async def _call(
        self, operation: str, call: Callable[[], Awaitable[T]], *, reads: bool = False
    ) -> T:
        try:
            result = await call()
        except stripe.StripeError as exc:
            outcome, error = _domain_error(exc, reads=reads)
            STRIPE_REQUESTS.labels(operation=operation, outcome=outcome).inc()
            log.warning(
                "stripe_request_failed",
                operation=operation,
                outcome=outcome,
                error=type(exc).__name__,
                http_status=exc.http_status,
                stripe_code=exc.code,
                stripe_request_id=exc.request_id,
            )
            raise error from exc
        STRIPE_REQUESTS.labels(operation=operation, outcome="ok").inc()
        return result

    async def create_customer(
        self, *, email: str | None, app_user_id: str, idempotency_key: str
    ) -> dict[str, Any]:
        params: stripe.params.CustomerCreateParams = {"metadata": {"app_user_id": app_user_id}}
        if email:
            params["email"] = email
        customer = await self._call(
            "customers.create",
            lambda: self._client.v1.customers.create_async(
                params=params, options={"idempotency_key": idempotency_key}
            ),
        )
        return _plain(customer)

    async def create_portal_session(
        self, params: dict[str, Any], *, idempotency_key: str | None, service_url: str
    ) -> dict[str, Any]:
        del service_url  # Stripe hosts its portal itself
        options: stripe.RequestOptions = {}
        if idempotency_key is not None:
            options["idempotency_key"] = idempotency_key
        session = await self._call(
            "billing_portal.sessions.create",
            lambda: self._client.v1.billing_portal.sessions.create_async(
                params=_sdk_params(params), options=options
            ),
        )
        return _plain(session)

    async def create_portal_configuration(
        self, params: dict[str, Any], *, idempotency_key: str
    ) -> Fetched:
        configuration = await self._call(
            "billing_portal.configurations.create",
            lambda: self._client.v1.billing_portal.configurations.create_async(
                params=_sdk_params(params),
                options={"idempotency_key": idempotency_key},
            ),
        )
        return _fetched(configuration)

    async def update_portal_configuration(
        self, configuration_id: str, params: dict[str, Any], *, idempotency_key: str
    ) -> Fetched:
        configuration = await self._call(
            "billing_portal.configurations.update",
            lambda: self._client.v1.billing_portal.configurations.update_async(
                configuration_id,
                params=_sdk_params(params),
                options={"idempotency_key": idempotency_key},
            ),
        )
        return _fetched(configuration)

    async def retrieve(self, kind: ObjectKind, object_id: str, *, account: str = "") -> Fetched:
        options = _account_options(account)
        v1 = self._client.v1
        retrievers: dict[str, Callable[[], Awaitable[stripe.StripeObject]]] = {
            "customer": lambda: v1.customers.retrieve_async(object_id, options=options),
            "subscription": lambda: v1.subscriptions.retrieve_async(object_id, options=options),
            "invoice": lambda: v1.invoices.retrieve_async(object_id, options=options),
            "payment_method": lambda: v1.payment_methods.retrieve_async(object_id, options=options),
            "tax_id": lambda: v1.tax_ids.retrieve_async(object_id, options=options),
            "price": lambda: v1.prices.retrieve_async(object_id, options=options),
            "product": lambda: v1.products.retrieve_async(object_id, options=options),
            "billing_portal.configuration": lambda: v1.billing_portal.configurations.retrieve_async(
                object_id, options=options
            ),
            "event": lambda: v1.events.retrieve_async(object_id, options=options),
        }
        obj = await self._call(f"{kind}.retrieve", retrievers[kind], reads=True)
        fetched = _fetched(obj)
        if kind == "subscription":
            await self._complete_items(fetched.object, account=account)
        return fetched

    async def _all(
        self, operation: str, first: Callable[[], Awaitable[stripe.ListObject[Any]]]
    ) -> tuple[list[dict[str, Any]], datetime]:
        """Every object of a list, page after page, each page through `_call` (errors and
        metrics as for any read); Stripe's Date of the first page."""
        page = await self._call(operation, first, reads=True)
        fetched_at = _stripe_date(page)
        objects: list[dict[str, Any]] = []
        while True:
            objects.extend(_plain(item) for item in page.data)
            if not page.has_more or not page.data:
                return objects, fetched_at
            page = await self._call(operation, page.next_page_async, reads=True)

    async def _complete_items(self, subscription: dict[str, Any], *, account: str) -> None:
        """A subscription's embedded `items` list stops at Stripe's page size (`has_more`):
        replace it with the whole list, so the mirror can replace the set whole."""
        items = subscription.get("items")
        if not isinstance(items, dict) or items.get("has_more") is not True:
            return
        options = _account_options(account)
        data, _ = await self._all(
            "subscription_items.list",
            lambda: self._client.v1.subscription_items.list_async(
                params={"subscription": subscription["id"], "limit": 100}, options=options
            ),
        )
        subscription["items"] = {**items, "data": data, "has_more": False}

    async def list_active_entitlements(self, customer_id: str, *, account: str = "") -> Fetched:
        options = _account_options(account)
        data, fetched_at = await self._all(
            "entitlements.active_entitlements.list",
            lambda: self._client.v1.entitlements.active_entitlements.list_async(
                params={"customer": customer_id, "limit": 100}, options=options
            ),
        )
        return Fetched(object=active_entitlement_summary(customer_id, data), fetched_at=fetched_at)

    async def retrieve_thin_event(self, event_id: str, *, account: str = "") -> Fetched:
        options: Any = {"stripe_context": account} if account else {}
        event = await self._call(
            "v2.core.events.retrieve",
            lambda: self._client.v2.core.events.retrieve_async(event_id, options=options),
            reads=True,
        )
        return _fetched(event)

    async def list_webhook_endpoints(self) -> list[dict[str, Any]]:
        endpoints, _ = await self._all(
            "webhook_endpoints.list",
            lambda: self._client.v1.webhook_endpoints.list_async(params={"limit": 100}),
        )
        return endpoints

    async def create_webhook_endpoint(
        self, params: dict[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        endpoint = await self._call(
            "webhook_endpoints.create",
            lambda: self._client.v1.webhook_endpoints.create_async(
                params=_sdk_params(params),
                options={"idempotency_key": idempotency_key},
            ),
        )
        return _plain(endpoint)

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK

    async def list_pages(
        self,
        kind: ListKind,
        *,
        params: dict[str, Any],
        customer: str | None = None,
        account: str = "",
    ) -> AsyncIterator[ListPage]:
        options = _account_options(account)
        v1 = self._client.v1
        sdk_params = _sdk_params(params)
        listers: dict[str, Callable[[], Awaitable[stripe.ListObject[Any]]]] = {
            "customer": lambda: v1.customers.list_async(sdk_params, options),
            "subscription": lambda: v1.subscriptions.list_async(sdk_params, options),
            "invoice": lambda: v1.invoices.list_async(sdk_params, options),
            "payment_method": lambda: v1.customers.payment_methods.list_async(
                customer or "", sdk_params, options
            ),
            "tax_id": lambda: v1.customers.tax_ids.list_async(customer or "", sdk_params, options),
            "billing_portal.configuration": lambda: v1.billing_portal.configurations.list_async(
                sdk_params, options
            ),
            "event": lambda: v1.events.list_async(sdk_params, options),
        }
        if kind in ("payment_method", "tax_id") and not customer:
            raise ValueError(f"listing {kind} needs a customer")
        operation = f"{kind}.list"
        page = await self._call(operation, listers[kind], reads=True)
        while True:
            objects = [_plain(item) for item in page.data]
            if kind == "subscription":
                for subscription in objects:
                    await self._complete_items(subscription, account=account)
            yield ListPage(objects=objects, fetched_at=_stripe_date(page))
            if not page.has_more or not page.data:
                return
            # The SDK's own pagination: the same filters, starting after the last object.
            page = await self._call(operation, page.next_page_async, reads=True)


def _retry_after(exc: stripe.StripeError) -> str:
    value = (exc.headers or {}).get("Retry-After")
    if value is not None and value.strip().isdigit():
        return str(max(1, int(value.strip())))
    return DEFAULT_RETRY_AFTER_SECONDS


def _domain_error(exc: stripe.StripeError, *, reads: bool) -> tuple[str, DomainError]:
    """(metrics outcome, the error to raise) for what the SDK raised, after its retries.
    `reads`: a 404 resource_missing means the object read does not exist
    (StripeObjectMissing); on a write it is a refusal like any other 4xx.

    Contract (README.md, "Errors"): Stripe 4xx is 502 stripe_error with Stripe's request
    id; network errors, timeouts and 5xx are 503 stripe_unavailable; a 429 is 503 too,
    with Retry-After.
    """
    status = exc.http_status
    extra: dict[str, Any] = {"stripe_request_id": exc.request_id}
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        return "rate_limited", StripeUnavailable(
            "Stripe is rate-limiting requests; try again shortly.",
            headers={"Retry-After": _retry_after(exc)},
            extra=extra,
        )
    if isinstance(exc, stripe.APIConnectionError) or status is None or status >= 500:
        return "unavailable", StripeUnavailable(extra=extra)
    if status == 409:
        # A conflict (another request with the same idempotency key still running, a
        # lock) that the SDK's retries did not outlast: transient, not a refusal.
        return "unavailable", StripeUnavailable(
            "Stripe is busy with a conflicting request; try again shortly.",
            headers={"Retry-After": "1"},
            extra=extra,
        )
    if reads and status == 404 and exc.code == "resource_missing":
        return "not_found", StripeObjectMissing(extra=extra)
    if isinstance(exc, stripe.IdempotencyError):
        return "refused", StripeIdempotencyConflict(extra=extra)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        # Stripe's message names (part of) our key: it is for the operator, not the caller.
        log.error(
            "stripe_credentials_refused", http_status=status, stripe_request_id=exc.request_id
        )
        return "refused", StripeError(
            "Stripe refused this service's credentials (check STRIPE_API_KEY).", extra=extra
        )
    code = exc.code
    detail = exc.user_message or (
        f"Stripe refused the request ({code})." if code else "Stripe refused the request."
    )
    return "refused", StripeError(detail, extra={**extra, "stripe_code": code})
