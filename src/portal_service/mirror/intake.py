"""Webhook intake: read and verify the body, record the event, apply it (DESIGN.md sections 3, 4).

Record-then-apply in one transaction per event: the event row is inserted (ON CONFLICT DO
NOTHING), the object's lock taken, and the apply runs inside a savepoint. If the apply
fails, the savepoint is rolled back and the event committed as `failed`: the row is
durable whatever the apply does, and a redelivery (or replay) applies it again.

A same-second tie that only Stripe can settle is the one case with two transactions: the
event is committed (`pending`), the transaction and lock released, Stripe asked, and the
answer applied under the lock in a second transaction.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import Request
from pydantic import ValidationError
from sqlalchemy import Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal_service.config import Settings
from portal_service.db import utcnow
from portal_service.errors import (
    DomainError,
    EventNotFound,
    InvalidPayload,
    InvalidSignature,
    WebhooksNotConfigured,
)
from portal_service.gateway import Fetched, Gateway, ObjectKind, StripeObjectMissing
from portal_service.mirror.apply import (
    ENTITLEMENT_SUMMARY,
    EVENT_ROUTES,
    EventRoute,
    MirrorKind,
    Outcome,
    Source,
    apply_fetched,
    apply_missing,
    apply_object,
    object_id_of,
)
from portal_service.mirror.locks import lock_object
from portal_service.mirror.schemas import EventStatus, WebhookStatus
from portal_service.mirror.signatures import InvalidSignatureError, verify_signature
from portal_service.mirror.stripe_models import Event, redact_session_urls
from portal_service.mirror.tables import StripeEvent
from portal_service.ops.logging import get_logger, scrub
from portal_service.ops.metrics import WEBHOOK_APPLY_SECONDS, WEBHOOK_EVENTS

log = get_logger("portal_service.webhooks")
ReplayOutcome = Literal["processed", "ignored", "stale"]

# A `pending` row younger than this is being applied by another delivery right now (it
# is waiting on Stripe to settle a tie); older, its process died and it counts as failed.
IN_FLIGHT = timedelta(seconds=60)
_MAX_ID_LENGTH = 255  # the width of stripe_events.id and .type
_MAX_ERROR_LENGTH = 500


class ApplyFailed(DomainError):
    status = 500
    code = "apply_failed"
    default_detail = (
        "The event was recorded but could not be applied; a redelivery or a replay applies it."
    )


class EventInProgress(DomainError):
    status = 500
    code = "event_in_progress"
    default_detail = (
        "Another delivery of this event is being applied right now; it will be retried."
    )


async def read_body(request: Request, *, limit: int) -> bytes:
    """The raw body, refused as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    too_large = InvalidPayload(f"The body is larger than WEBHOOK_MAX_BODY_BYTES ({limit} bytes).")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def verify(body: bytes, header: str | None, settings: Settings) -> None:
    secrets = [secret.get_secret_value() for secret in settings.stripe_webhook_secrets]
    if not any(secrets):
        raise WebhooksNotConfigured()
    try:
        verify_signature(
            body,
            header,
            secrets,
            tolerance=settings.stripe_webhook_tolerance,
            now=int(time.time()),
        )
    except InvalidSignatureError as exc:
        raise InvalidSignature(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class Received:
    """A verified event as recorded: `event` is None for a thin (v2) event."""

    id: str
    type: str
    created: datetime
    livemode: bool
    account: str
    api_version: str | None
    payload: dict[str, Any]
    event: Event | None


def _no_constants(name: str) -> Any:
    # NaN/Infinity are not JSON, and jsonb refuses them.
    raise ValueError(f"{name} is not JSON")


def _check_ids(event_id: Any, event_type: Any) -> tuple[str, str]:
    for value in (event_id, event_type):
        if not isinstance(value, str) or not value or len(value) > _MAX_ID_LENGTH:
            raise InvalidPayload("The body is not a Stripe event: bad id or type.")
    return event_id, event_type


def _thin_event(data: dict[str, Any]) -> Received:
    # v2 "thin" events carry a reference, not an object, and an ISO `created`: recorded
    # and acknowledged, never projected.
    event_id, event_type = _check_ids(data.get("id"), data.get("type"))
    created_raw = data.get("created")
    try:
        created = datetime.fromisoformat(created_raw) if isinstance(created_raw, str) else None
    except ValueError:
        created = None
    if created is None or created.utcoffset() is None:
        raise InvalidPayload("The thin event has no valid `created` time.")
    context = data.get("context")
    return Received(
        id=event_id,
        type=event_type,
        created=created,
        livemode=data.get("livemode") is True,
        account=context if isinstance(context, str) else "",
        api_version=None,
        payload=redact_session_urls(data),
        event=None,
    )


def parse_event(body: bytes) -> Received:
    """The verified body as an event, or InvalidPayload (400)."""
    try:
        data = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise InvalidPayload("The body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise InvalidPayload("The body is not a Stripe event: not a JSON object.")
    return received_from(data)


def received_from(data: dict[str, Any]) -> Received:
    """A decoded event body (or a recorded payload) as an event, or InvalidPayload."""
    if data.get("object") == "v2.core.event":
        return _thin_event(data)
    if data.get("object", "event") != "event":
        raise InvalidPayload("The body is not a Stripe event: `object` is not `event`.")
    try:
        event = Event.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]}))
        raise InvalidPayload(f"The body is not a Stripe event: invalid {fields}.") from exc
    _check_ids(event.id, event.type)
    return Received(
        id=event.id,
        type=event.type,
        created=event.created,
        livemode=event.livemode,
        account=event.account,
        api_version=event.api_version,
        payload=redact_session_urls(data),
        event=event,
    )


def describe_error(exc: BaseException) -> str:
    """A short, secret-free `last_error`: the class and first line, never SQL or parameters."""
    # SQLAlchemy's message carries the statement and its parameters (customer data): only
    # the driver's own message is kept, under SQLAlchemy's portable class name.
    origin = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [exc.detail] if isinstance(exc, DomainError) else str(origin).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    cleaned: str = scrub(text)
    return cleaned[:_MAX_ERROR_LENGTH]


def _events_table() -> Table:
    table: Table = StripeEvent.__table__  # type: ignore[attr-defined]  # set by SQLModel
    return table


@dataclass(frozen=True, slots=True)
class _EventState:
    status: str
    received_at: datetime
    payload: dict[str, Any]


async def _insert_event(session: AsyncSession, received: Received, *, status: EventStatus) -> bool:
    """Record the event; False when a row with its id already exists."""
    events = _events_table()
    now = utcnow()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(events)
        .values(
            id=received.id,
            type=received.type,
            api_version=received.api_version,
            created=received.created,
            livemode=received.livemode,
            account=received.account,
            payload=received.payload,
            received_at=now,
            status=status,
            attempts=0,
            processed_at=now if status == "ignored" else None,
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(events.c.id)
    )
    return (await session.execute(statement)).first() is not None


async def _lock_event(session: AsyncSession, event_id: str) -> _EventState | None:
    # FOR UPDATE serialises deliveries and replays of one event on PostgreSQL; SQLite's
    # BEGIN IMMEDIATE already did.
    events = _events_table()
    row = (
        await session.execute(
            select(events.c.status, events.c.received_at, events.c.payload)
            .where(events.c.id == event_id)
            .with_for_update()
        )
    ).one_or_none()
    if row is None:
        return None
    return _EventState(status=row.status, received_at=row.received_at, payload=row.payload)


async def _finish(
    session: AsyncSession, event_id: str, status: EventStatus, *, error: str | None = None
) -> None:
    events = _events_table()
    values: dict[str, Any] = {"status": status}
    if status == "ignored":
        values["processed_at"] = utcnow()
    else:
        values["attempts"] = events.c.attempts + 1
        values["processed_at"] = utcnow() if status == "processed" else None
    if error is not None:
        values["last_error"] = error
    await session.execute(update(events).where(events.c.id == event_id).values(values))


def _count(event_type: str, result: str) -> None:
    WEBHOOK_EVENTS.labels(type=event_type, result=result).inc()


# What the gateway calls each kind that a tie may be re-fetched for (portal sessions
# cannot be retrieved; entitlement summaries are listed instead).
_RETRIEVABLE: dict[MirrorKind, ObjectKind] = {
    "customer": "customer",
    "subscription": "subscription",
    "payment_method": "payment_method",
    "invoice": "invoice",
    "tax_id": "tax_id",
    "billing_portal.configuration": "billing_portal.configuration",
}


@dataclass(frozen=True, slots=True)
class _Refetch:
    route: EventRoute
    object_id: str


class EventProcessor:
    """Records and applies events: webhook deliveries, admin replays and the CLI's replay."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: Gateway,
        *,
        livemode: bool,
        accept_other_mode_events: bool,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._gateway = gateway
        self._livemode = livemode
        self._accept_other_mode = accept_other_mode_events

    @classmethod
    def for_settings(
        cls,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: Gateway,
        settings: Settings,
    ) -> EventProcessor:
        return cls(
            sessionmaker,
            gateway,
            livemode=settings.livemode,
            accept_other_mode_events=settings.accept_other_mode_events,
        )

    def _route(self, received: Received) -> EventRoute | None:
        if received.event is None:
            return None
        # Events of the other mode (a test event on a live deployment) never reach the mirror.
        if received.livemode != self._livemode and not self._accept_other_mode:
            return None
        return EVENT_ROUTES.get(received.type)

    async def receive(self, received: Received) -> WebhookStatus:
        """Record and apply one delivery. Raises ApplyFailed / EventInProgress (500)."""
        started = time.perf_counter()
        try:
            return await self._receive(received)
        finally:
            WEBHOOK_APPLY_SECONDS.observe(time.perf_counter() - started)

    async def _receive(self, received: Received) -> WebhookStatus:
        route = self._route(received)
        async with self._sessionmaker() as session:
            inserted = await _insert_event(
                session, received, status="pending" if route is not None else "ignored"
            )
            if inserted and route is None:
                await session.commit()
                self._done(received, "ignored")
                return "ignored"
            if not inserted:
                # Concurrent deliveries of one event wait here for the first to commit.
                state = await _lock_event(session, received.id)
                if state is None:
                    # The row vanished between the insert and the lock (an operator
                    # removed it): let Stripe deliver again rather than guess.
                    raise EventInProgress()
                if state.status in ("processed", "ignored"):
                    await session.rollback()
                    self._done(received, "duplicate")
                    return "duplicate"
                if state.status == "pending" and utcnow() - state.received_at < IN_FLIGHT:
                    # Answering 200 here would lose the event if that other apply fails;
                    # a 500 makes Stripe deliver it again later.
                    raise EventInProgress()
            result = await self._apply(session, received, route)
        if isinstance(result, _Refetch):
            return await self._apply_refetched(received, result)
        return result

    async def replay(self, event_id: str) -> tuple[EventStatus, ReplayOutcome]:
        """Re-apply a recorded event through the same path, whatever its status.
        Returns (its recorded status now, what happened). Raises EventNotFound, ApplyFailed."""
        async with self._sessionmaker() as session:
            state = await _lock_event(session, event_id)
            if state is None:
                raise EventNotFound()
            received = received_from(state.payload)
            applied = await self._apply(session, received, self._route(received))
        if not isinstance(applied, _Refetch):
            return ("ignored" if applied == "ignored" else "processed"), applied
        refetched = await self._apply_refetched(received, applied)
        # duplicate: another delivery finished it while Stripe was being asked.
        return "processed", "processed" if refetched == "duplicate" else refetched

    async def _apply(
        self, session: AsyncSession, received: Received, route: EventRoute | None
    ) -> ReplayOutcome | _Refetch:
        """With the event row inserted or locked: apply it, mark it, commit."""
        if route is None or received.event is None:
            await _finish(session, received.id, "ignored")
            await session.commit()
            self._done(received, "ignored")
            return "ignored"
        obj = received.event.data.object
        source = Source(
            ts=received.created,
            event_id=received.id,
            livemode=received.livemode,
            account=received.account,
            settle_ties_locally=self._gateway.offline,
        )
        try:
            async with session.begin_nested():
                object_id = object_id_of(route.kind, obj)
                await lock_object(
                    session, account=received.account, kind=route.kind, object_id=object_id
                )
                outcome = await apply_object(
                    session, route.kind, obj, source=source, action=route.action
                )
        except Exception as exc:
            await self._fail(session, received, exc)
            raise ApplyFailed() from exc
        if outcome is Outcome.REFETCH:
            # Durable before Stripe is called; the transaction (and the lock) end here.
            await session.commit()
            return _Refetch(route=route, object_id=object_id)
        await _finish(session, received.id, "processed")
        await session.commit()
        result: ReplayOutcome = "stale" if outcome is Outcome.STALE else "processed"
        self._done(received, result)
        return result

    async def _fetch(self, refetch: _Refetch, account: str) -> Fetched | None:
        """Stripe's current object, or None when Stripe no longer has it."""
        try:
            if refetch.route.kind == ENTITLEMENT_SUMMARY:
                return await self._gateway.list_active_entitlements(
                    refetch.object_id, account=account
                )
            kind = _RETRIEVABLE[refetch.route.kind]
            return await self._gateway.retrieve(kind, refetch.object_id, account=account)
        except StripeObjectMissing:
            return None

    async def _apply_refetched(
        self, received: Received, refetch: _Refetch
    ) -> Literal["processed", "stale", "duplicate"]:
        """Settle a tie with Stripe's answer: fetched outside any transaction, applied under
        the lock and stamped with Stripe's Date (DESIGN.md section 4 item 4)."""
        kind = refetch.route.kind
        try:
            fetched = await self._fetch(refetch, received.account)
        except Exception as exc:
            # Stripe refused or is unreachable (or the gateway broke): the event is failed,
            # never left pending, and a redelivery or replay asks again.
            async with self._sessionmaker() as session:
                state = await _lock_event(session, received.id)
                if state is not None and state.status in ("processed", "ignored"):
                    await session.rollback()
                    self._done(received, "duplicate")
                    return "duplicate"
                await self._fail(session, received, exc)
            raise ApplyFailed() from exc
        async with self._sessionmaker() as session:
            state = await _lock_event(session, received.id)
            if state is None or state.status in ("processed", "ignored"):
                await session.rollback()
                self._done(received, "duplicate")
                return "duplicate"
            try:
                async with session.begin_nested():
                    if fetched is None:
                        outcome = await apply_missing(
                            session,
                            kind,
                            refetch.object_id,
                            utcnow(),
                            account=received.account,
                            livemode=received.livemode,
                        )
                    else:
                        outcome = await apply_fetched(
                            session,
                            kind,
                            fetched.object,
                            fetched.fetched_at,
                            account=received.account,
                        )
            except Exception as exc:
                await self._fail(session, received, exc)
                raise ApplyFailed() from exc
            await _finish(session, received.id, "processed")
            await session.commit()
        _count(received.type, "refetched")
        refetched: Literal["processed", "stale"] = (
            "stale" if outcome is Outcome.STALE else "processed"
        )
        self._done(received, refetched)
        return refetched

    async def _fail(self, session: AsyncSession, received: Received, exc: BaseException) -> None:
        error = describe_error(exc)
        await _finish(session, received.id, "failed", error=error)
        await session.commit()
        _count(received.type, "failed")
        log.warning("webhook_apply_failed", event_id=received.id, type=received.type, error=error)

    def _done(self, received: Received, result: WebhookStatus) -> None:
        _count(received.type, result)
        log.info(
            "webhook_event",
            event_id=received.id,
            type=received.type,
            account=received.account,
            result=result,
        )
