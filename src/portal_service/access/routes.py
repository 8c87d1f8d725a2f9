"""Reads for apps: the caller's billing state under /me, and entitlements for backends.

Every read sees only the API key's mode and the platform account, and goes to the read
session (the replica when DATABASE_READ_URL is set).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Response

from portal_service.access.billing import (
    customer_profile,
    invoices_page,
    payment_methods_page,
    subscriptions_page,
)
from portal_service.access.entitlements import (
    ENTITLEMENTS_CACHE_CONTROL,
    access_policy,
    entitlements_response,
)
from portal_service.access.facts import customer_access, linked_customer
from portal_service.access.policy import AccessPolicy
from portal_service.access.schemas import (
    BillingCustomer,
    BillingInvoicePage,
    BillingPaymentMethodPage,
    BillingSubscriptionPage,
    Entitlements,
)
from portal_service.auth import BackendCaller, CurrentUser
from portal_service.config import AppSettings
from portal_service.db import ReadSession, utcnow
from portal_service.errors import (
    AuthUnavailable,
    CustomerNotFound,
    Forbidden,
    InvalidRequest,
    Unauthenticated,
    problem_responses,
)
from portal_service.mirror.tables import Customer
from portal_service.pagination import PageParams

router = APIRouter()

_ETAG_HEADER = {
    "ETag": {
        "description": "Hash of the body without `evaluated_at`; send it back in `If-None-Match`.",
        "schema": {"type": "string"},
    },
    "Cache-Control": {"description": ENTITLEMENTS_CACHE_CONTROL, "schema": {"type": "string"}},
}
_ENTITLEMENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"headers": _ETAG_HEADER},
    304: {
        "description": "Not Modified: `If-None-Match` matches the current ETag. No body.",
        "headers": _ETAG_HEADER,
    },
}
_USER_ERRORS = (Unauthenticated, Forbidden, AuthUnavailable)
_BACKEND_ERRORS = (Unauthenticated, Forbidden)


async def _access_policy(settings: AppSettings) -> AccessPolicy:
    # async: a plain `def` dependency would cost a thread-pool hop per request.
    return access_policy(settings)


Policy = Annotated[AccessPolicy, Depends(_access_policy)]
IfNoneMatch = Annotated[
    str | None,
    Header(description="ETag of an earlier answer: 304 with no body while it still holds."),
]


async def _caller_customer_or_none(
    user: CurrentUser, session: ReadSession, settings: AppSettings
) -> Customer | None:
    return await linked_customer(
        session, app_user_id=user.user_id, livemode=settings.livemode, load_raw=False
    )


async def _caller_customer(
    customer: Annotated[Customer | None, Depends(_caller_customer_or_none)],
) -> Customer:
    if customer is None:
        raise CustomerNotFound("No billing customer is linked to this user.")
    return customer


CallerCustomer = Annotated[Customer, Depends(_caller_customer)]


@router.get(
    "/me",
    tags=["me"],
    summary="The caller's billing customer",
    response_model=BillingCustomer,
    responses=problem_responses(*_USER_ERRORS, CustomerNotFound),
)
async def get_me(session: ReadSession, customer: CallerCustomer) -> BillingCustomer:
    return await customer_profile(session, customer)


@router.get(
    "/me/subscriptions",
    tags=["me"],
    summary="The caller's subscriptions, canceled ones included, newest first",
    response_model=BillingSubscriptionPage,
    responses=problem_responses(*_USER_ERRORS, CustomerNotFound, InvalidRequest),
)
async def list_my_subscriptions(
    session: ReadSession, customer: CallerCustomer, page: PageParams, policy: Policy
) -> BillingSubscriptionPage:
    return await subscriptions_page(session, customer, page=page, policy=policy, now=utcnow())


@router.get(
    "/me/entitlements",
    tags=["me"],
    summary="What the caller may use now",
    description=(
        "A user without a billing customer gets `customer_id: null` and no access, not a 404. "
        "Poll with `If-None-Match` for a cheap 304 while nothing changed."
    ),
    response_model=Entitlements,
    responses={**_ENTITLEMENT_RESPONSES, **problem_responses(*_USER_ERRORS, InvalidRequest)},
)
async def get_my_entitlements(
    user: CurrentUser,
    session: ReadSession,
    settings: AppSettings,
    policy: Policy,
    if_none_match: IfNoneMatch = None,
) -> Response:
    customer = await customer_access(session, app_user_id=user.user_id, livemode=settings.livemode)
    # The same URL answers for whoever holds the token: a cache must key on it.
    return entitlements_response(
        customer, policy, if_none_match, extra_headers={"Vary": "Authorization"}
    )


@router.get(
    "/me/invoices",
    tags=["me"],
    summary="The caller's invoices, newest first",
    response_model=BillingInvoicePage,
    responses=problem_responses(*_USER_ERRORS, CustomerNotFound, InvalidRequest),
)
async def list_my_invoices(
    session: ReadSession, customer: CallerCustomer, page: PageParams
) -> BillingInvoicePage:
    return await invoices_page(session, customer, page=page)


@router.get(
    "/me/payment-methods",
    tags=["me"],
    summary="Payment methods attached to the caller's customer, newest first",
    response_model=BillingPaymentMethodPage,
    responses=problem_responses(*_USER_ERRORS, CustomerNotFound, InvalidRequest),
)
async def list_my_payment_methods(
    session: ReadSession, customer: CallerCustomer, page: PageParams
) -> BillingPaymentMethodPage:
    return await payment_methods_page(session, customer, page=page)


@router.get(
    "/customers/{customer_id}/entitlements",
    tags=["entitlements"],
    summary="What a customer may use now",
    description="404 `customer_not_found` for an unknown or deleted customer of this mode.",
    response_model=Entitlements,
    responses={
        **_ENTITLEMENT_RESPONSES,
        **problem_responses(*_BACKEND_ERRORS, CustomerNotFound, InvalidRequest),
    },
)
async def get_customer_entitlements(
    _caller: BackendCaller,
    session: ReadSession,
    settings: AppSettings,
    policy: Policy,
    customer_id: Annotated[str, Path(examples=["cus_123"])],
    if_none_match: IfNoneMatch = None,
) -> Response:
    customer = await customer_access(session, customer_id=customer_id, livemode=settings.livemode)
    if customer is None:
        raise CustomerNotFound()
    return entitlements_response(customer, policy, if_none_match)


@router.get(
    "/users/{app_user_id}/entitlements",
    tags=["entitlements"],
    summary="What an app user may use now",
    description="A user without a billing customer gets `customer_id: null` and no access.",
    response_model=Entitlements,
    responses={**_ENTITLEMENT_RESPONSES, **problem_responses(*_BACKEND_ERRORS, InvalidRequest)},
)
async def get_user_entitlements(
    _caller: BackendCaller,
    session: ReadSession,
    settings: AppSettings,
    policy: Policy,
    app_user_id: Annotated[str, Path(examples=["user_42"])],
    if_none_match: IfNoneMatch = None,
) -> Response:
    customer = await customer_access(session, app_user_id=app_user_id, livemode=settings.livemode)
    return entitlements_response(customer, policy, if_none_match)
