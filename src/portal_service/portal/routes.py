"""HTTP routes of the portal package: POST /portal-sessions, linking app users to
customers, and offline mode's portal page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, Path, Request, Response, status

from portal_service.auth import AnyCaller, BackendCaller
from portal_service.config import AppSettings
from portal_service.db import DbSession
from portal_service.errors import (
    AuthUnavailable,
    CustomerNotFound,
    Forbidden,
    IdempotencyKeyExpired,
    IdempotencyKeyReused,
    InvalidRequest,
    PortalActionUnavailable,
    RateLimited,
    ReturnUrlNotAllowed,
    ReturnUrlRequired,
    StripeError,
    StripeUnavailable,
    SubscriptionNotFound,
    Unauthenticated,
    UnsupportedLocale,
    problem_responses,
)
from portal_service.gateway import GatewayDep
from portal_service.portal.configs import PortalConfigDep
from portal_service.portal.customers import (
    CustomerAlreadyLinked,
    CustomerLinkConflict,
    link_customer,
    unlink_customer,
)
from portal_service.portal.flows import TaxBehaviorCacheDep
from portal_service.portal.idempotency import IDEMPOTENCY_KEY_PATTERN
from portal_service.portal.offline import router as offline_router
from portal_service.portal.schemas import (
    AppUserId,
    CustomerLinkOut,
    CustomerLinkRequest,
    PortalSessionOut,
    PortalSessionRequest,
)
from portal_service.portal.sessions import create_portal_session

router = APIRouter()
router.include_router(offline_router)

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Up to 200 characters of [A-Za-z0-9_-]. The same key and body from the "
        "same caller within 5 minutes returns the same session.",
    ),
]
AcceptLanguage = Annotated[str | None, Header(alias="Accept-Language", max_length=1024)]
UserIdPath = Annotated[AppUserId, Path(description="The app's user id.")]


@router.post(
    "/portal-sessions",
    status_code=status.HTTP_201_CREATED,
    response_model=PortalSessionOut,
    tags=["portal"],
    summary="Create a customer portal session",
    description=(
        "Returns a short-lived link to Stripe's hosted customer portal for the caller's "
        "billing customer (end user: from the token; API key: `customer_id` or "
        "`app_user_id`). Flows, return URLs, locale and configuration are validated "
        "before Stripe is called. The URL is a bearer credential: redirect to it, never "
        "store or log it. Responses carry `Cache-Control: no-store`."
    ),
    responses=problem_responses(
        Unauthenticated,
        Forbidden,
        CustomerNotFound,
        SubscriptionNotFound,
        PortalActionUnavailable,
        IdempotencyKeyExpired,
        InvalidRequest,
        ReturnUrlNotAllowed,
        ReturnUrlRequired,
        UnsupportedLocale,
        IdempotencyKeyReused,
        RateLimited,
        StripeError,
        StripeUnavailable,
        AuthUnavailable,
    ),
)
async def post_portal_session(
    caller: AnyCaller,
    session: DbSession,
    settings: AppSettings,
    gateway: GatewayDep,
    portal_config: PortalConfigDep,
    tax_cache: TaxBehaviorCacheDep,
    request: Request,
    response: Response,
    body: Annotated[PortalSessionRequest | None, Body()] = None,
    idempotency_key: IdempotencyKeyHeader = None,
    accept_language: AcceptLanguage = None,
) -> PortalSessionOut:
    created = await create_portal_session(
        session,
        caller=caller,
        body=body or PortalSessionRequest(),
        idempotency_key=idempotency_key,
        accept_language=accept_language,
        settings=settings,
        gateway=gateway,
        portal_config=portal_config,
        tax_cache=tax_cache,
        # Offline mode's session page lives on this service: on the host and port (and
        # root path) this request reached, not on a configured or default address.
        service_url=str(request.base_url),
    )
    # The body holds a bearer URL: no cache, shared or private, may keep it.
    response.headers["Cache-Control"] = "no-store"
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return created.session


@router.put(
    "/users/{app_user_id}/customer",
    response_model=CustomerLinkOut,
    tags=["customers"],
    summary="Link an app user to an existing Stripe customer",
    description=(
        "Afterwards the user's billing customer is `customer_id` (PUT replaces: a user "
        "linked to another customer is moved, that customer is kept). A customer linked "
        "to another user is refused with 409 `customer_already_linked`."
    ),
    responses=problem_responses(
        Unauthenticated,
        Forbidden,
        CustomerNotFound,
        CustomerAlreadyLinked,
        CustomerLinkConflict,
        InvalidRequest,
        StripeError,
        StripeUnavailable,
    ),
)
async def put_user_customer(
    app_user_id: UserIdPath,
    link: CustomerLinkRequest,
    _caller: BackendCaller,
    session: DbSession,
    settings: AppSettings,
    gateway: GatewayDep,
) -> CustomerLinkOut:
    return await link_customer(
        session,
        gateway,
        app_user_id=app_user_id,
        customer_id=link.customer_id,
        livemode=settings.livemode,
    )


@router.delete(
    "/users/{app_user_id}/customer",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["customers"],
    summary="Unlink an app user from its customer",
    description="The Stripe customer and its mirror are kept; only the link is removed.",
    responses=problem_responses(Unauthenticated, Forbidden, CustomerNotFound),
)
async def delete_user_customer(
    app_user_id: UserIdPath,
    _caller: BackendCaller,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    await unlink_customer(session, app_user_id=app_user_id, livemode=settings.livemode)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
