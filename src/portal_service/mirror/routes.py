"""HTTP routes of the mirror package: POST /webhooks, the /admin/events routes and resync."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request

from portal_service.app_state import app_state
from portal_service.auth import AdminCaller
from portal_service.config import AppSettings
from portal_service.db import DbSession
from portal_service.errors import (
    CustomerNotFound,
    EventNotFound,
    Forbidden,
    InvalidPayload,
    InvalidRequest,
    InvalidSignature,
    StripeError,
    StripeUnavailable,
    Unauthenticated,
    WebhooksNotConfigured,
    problem_responses,
)
from portal_service.gateway import GatewayDep
from portal_service.mirror.admin import list_events
from portal_service.mirror.events import parse_event, read_body, verify
from portal_service.mirror.inbox import EventInProgress
from portal_service.mirror.intake import ApplyFailed, EventProcessor
from portal_service.mirror.schemas import (
    EventPage,
    EventStatus,
    ReplayResult,
    ResyncResult,
    WebhookAck,
)
from portal_service.mirror.sync import Syncer
from portal_service.pagination import PageParams

router = APIRouter()


async def _processor(
    request: Request, settings: AppSettings, gateway: GatewayDep
) -> EventProcessor:
    # Intake runs its own transactions (one per event, two around a Stripe re-fetch), so
    # it takes the sessionmaker rather than the request's session.
    state = app_state(request)
    return EventProcessor.for_settings(
        state.sessionmaker, gateway, settings, intake_pool=getattr(state, "intake_pool", None)
    )


Processor = Annotated[EventProcessor, Depends(_processor)]

_RAW_JSON_BODY = {
    "requestBody": {
        "required": True,
        "description": "A Stripe event exactly as Stripe sent it (the signature covers these bytes).",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


@router.post(
    "/webhooks",
    tags=["webhooks"],
    summary="Receive a Stripe event: verify, record, apply",
    description=(
        "Verified against every secret of STRIPE_WEBHOOK_SECRETS (`v1` only, timestamp "
        "within STRIPE_WEBHOOK_TOLERANCE either way), recorded, then applied to the mirror. "
        "A 500 means the event is recorded but not applied yet: Stripe's retry applies it."
    ),
    responses=problem_responses(
        InvalidSignature,
        InvalidPayload,
        InvalidRequest,
        ApplyFailed,
        EventInProgress,
        WebhooksNotConfigured,
    ),
    openapi_extra=_RAW_JSON_BODY,
)
async def receive_webhook(
    request: Request,
    settings: AppSettings,
    processor: Processor,
    stripe_signature: Annotated[
        str | None, Header(description="Stripe's signature header.")
    ] = None,
) -> WebhookAck:
    if not settings.stripe_webhook_secrets:
        raise WebhooksNotConfigured()
    body = await read_body(request, limit=settings.webhook_max_body_bytes)
    verify(body, stripe_signature, settings)
    status = await processor.receive(parse_event(body))
    return WebhookAck(status=status)


@router.get(
    "/admin/events",
    tags=["admin"],
    summary="Recorded Stripe events, newest first",
    responses=problem_responses(Unauthenticated, Forbidden, InvalidRequest),
)
async def admin_list_events(
    _caller: AdminCaller,
    session: DbSession,
    page: PageParams,
    status: Annotated[EventStatus | None, Query(description="Only events in this status.")] = None,
    event_type: Annotated[
        str | None, Query(alias="type", description="Only events of this type.", max_length=255)
    ] = None,
) -> EventPage:
    return await list_events(session, status=status, event_type=event_type, page=page)


@router.post(
    "/admin/events/{event_id}/replay",
    tags=["admin"],
    summary="Re-apply one recorded event",
    description="Applies the recorded event again through the webhook path (ordering rules hold).",
    responses=problem_responses(
        Unauthenticated, Forbidden, EventNotFound, InvalidRequest, ApplyFailed
    ),
)
async def admin_replay_event(
    _caller: AdminCaller, processor: Processor, event_id: str
) -> ReplayResult:
    status, result = await processor.replay(event_id)
    return ReplayResult(id=event_id, status=status, result=result)


@router.post(
    "/admin/customers/{customer_id}/resync",
    tags=["admin"],
    summary="Re-fetch one customer's objects from Stripe and apply them",
    description=(
        "Fetches the customer, its subscriptions (every status), payment methods, invoices, "
        "tax ids and active entitlements from Stripe and applies them through the webhook "
        "upsert path (ordering rules hold). 404 when Stripe has no such customer (a "
        "mirrored one is marked deleted)."
    ),
    responses=problem_responses(
        Unauthenticated,
        Forbidden,
        CustomerNotFound,
        InvalidRequest,
        StripeError,
        StripeUnavailable,
    ),
)
async def admin_resync_customer(
    _caller: AdminCaller,
    request: Request,
    settings: AppSettings,
    gateway: GatewayDep,
    customer_id: Annotated[str, Path(max_length=255)],
) -> ResyncResult:
    # Its own short transactions, one per page, each after its Stripe call returned: never
    # the request's session, which would be held across the calls.
    syncer = Syncer(
        app_state(request).sessionmaker, gateway, livemode=settings.livemode, rate_limit_retries=0
    )
    counts = await syncer.resync_customer(customer_id)
    return ResyncResult(customer_id=customer_id, **counts)
