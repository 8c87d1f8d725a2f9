"""Webhook intake: read and verify the body, record the event, apply it (DESIGN.md sections 3, 4).

Record-then-apply in one transaction per event: the event row is inserted (ON CONFLICT DO
NOTHING) already marked `processed`, the object's lock taken by that same statement, and
the apply runs in that transaction; the commit makes row and apply durable together. If the
apply fails, the transaction is rolled back and the event recorded as `failed` in a new one
(no savepoint: two round trips less on every event): nothing is acknowledged before one of
the two commits, so the event is either recorded or delivered again by Stripe, and a
redelivery (or replay) applies it. An event already recorded (a redelivery, a replay) is
applied inside a savepoint instead, since its row must stay whatever the apply does.

A same-second tie that only Stripe can settle is the one case with two transactions: the
event is committed (`pending`), the transaction and lock released, Stripe asked, and the
answer applied under the lock in a second transaction (asked again if an event of the
answer's own second reached the object meanwhile).
"""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import orjson
from fastapi import Request
from pydantic import ValidationError
from sqlalchemy import ColumnElement, Executable, and_, bindparam, or_, select, update
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
from portal_service.mirror.apply import apply_answer, apply_object, watermark
from portal_service.mirror.intake_pg import FastIntake
from portal_service.mirror.locks import lock_call, lock_key, lock_object
from portal_service.mirror.ordering import Outcome, Source, Watermark, parse_incoming
from portal_service.mirror.projections import (
    ENTITLEMENT_SUMMARY,
    EVENT_ROUTES,
    EventRoute,
    MirrorKind,
    object_id_of,
)
from portal_service.mirror.schemas import EventStatus, WebhookStatus
from portal_service.mirror.signatures import InvalidSignatureError, verify_signature
from portal_service.mirror.stripe_models import Event, redact_session_urls
from portal_service.mirror.tables import StripeEvent, table_of
from portal_service.ops.logging import get_logger, scrub
from portal_service.ops.metrics import WEBHOOK_APPLY_SECONDS, WEBHOOK_EVENTS

if TYPE_CHECKING:
    from portal_service.mirror.thin import ThinEvents

log = get_logger("portal_service.webhooks")
ReplayOutcome = Literal["processed", "ignored", "stale"]

# A `pending` row younger than this is being applied by another delivery right now (it
# is waiting on Stripe to settle a tie); older, its process died and it counts as failed.
IN_FLIGHT = timedelta(seconds=60)
# Re-fetches of one tie: more are needed only while events of the answers' own second
# keep arriving, which ends when Stripe's clock moves on.
_REFETCH_ATTEMPTS = 3
_MAX_ID_LENGTH = 255  # the width of stripe_events.id, .type and .account
_MAX_API_VERSION_LENGTH = 64  # the width of stripe_events.api_version
_MAX_ERROR_LENGTH = 500
# Stripe's objects nest a few levels; a hostile body nested hundreds deep would exhaust
# Python's stack in the recursive walks after parsing (an unhandled 500).
MAX_JSON_DEPTH = 64


class ApplyFailed(DomainError):
    status = 500
    code = "apply_failed"
    default_detail = (
        "The event was recorded but could not be applied; a redelivery or a replay applies it."
    )


class RefetchUnsettled(Exception):
    """Each answer from Stripe came in the second of an event that reached the row while
    Stripe was being asked: the tie stays open until a redelivery or replay."""


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


def _check_widths(account: str, api_version: str | None) -> None:
    # Refused here rather than by the database: a row the database refuses is never
    # recorded, and every redelivery would fail the same way.
    if len(account) > _MAX_ID_LENGTH:
        raise InvalidPayload("The body is not a Stripe event: bad account.")
    if api_version is not None and len(api_version) > _MAX_API_VERSION_LENGTH:
        raise InvalidPayload("The body is not a Stripe event: bad api_version.")


def _thin_event(data: dict[str, Any]) -> Received:
    # v2 "thin" events carry a reference, not an object, and an ISO `created`: recorded,
    # then their object is fetched (mirror/thin.py).
    event_id, event_type = _check_ids(data.get("id"), data.get("type"))
    created_raw = data.get("created")
    try:
        created = datetime.fromisoformat(created_raw) if isinstance(created_raw, str) else None
    except ValueError:
        created = None
    if created is None or created.utcoffset() is None:
        raise InvalidPayload("The thin event has no valid `created` time.")
    context = data.get("context")
    account = context if isinstance(context, str) else ""
    _check_widths(account, None)
    return Received(
        id=event_id,
        type=event_type,
        created=created,
        livemode=data.get("livemode") is True,
        account=account,
        api_version=None,
        payload=redact_session_urls(data),
        event=None,
    )


def _too_deep(body: bytes, data: Any) -> bool:
    # Cheap first: a body with fewer opening brackets than the limit cannot nest deeper.
    if body.count(b"{") + body.count(b"[") <= MAX_JSON_DEPTH:
        return False
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


_LONG_NUMBER = re.compile(rb"\d{19}")


def parse_event(body: bytes) -> Received:
    """The verified body as an event, or InvalidPayload (400)."""
    try:
        # orjson first (about 4x faster), except where it would decode differently: an
        # integer beyond 64 bits (a float to orjson). Whatever it refuses (NaN, a lone
        # surrogate, a BOM, deep nesting) json decides, as it always did.
        if _LONG_NUMBER.search(body) is not None:
            raise orjson.JSONDecodeError("long number", "", 0)
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            data = json.loads(body, parse_constant=_no_constants)
        except (ValueError, RecursionError) as exc:
            raise InvalidPayload("The body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise InvalidPayload("The body is not a Stripe event: not a JSON object.")
    if _too_deep(body, data):
        raise InvalidPayload(f"The body nests JSON deeper than {MAX_JSON_DEPTH} levels.")
    # A body that never names a portal session (nor escapes a character, which could spell
    # it) holds no session URL: its redaction, a copy of the whole tree, would change nothing.
    redact = b"billing_portal.session" in body or b"\\u" in body
    return received_from(data, redact=redact)


def received_from(data: dict[str, Any], *, redact: bool = True) -> Received:
    """A decoded event body (or a recorded payload) as an event, or InvalidPayload.
    `redact=False`: `data` is known to carry no portal session URL."""
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
    _check_widths(event.account, event.api_version)
    return Received(
        id=event.id,
        type=event.type,
        created=event.created,
        livemode=event.livemode,
        account=event.account,
        api_version=event.api_version,
        payload=redact_session_urls(data) if redact else data,
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


_EVENTS = table_of(StripeEvent)


def _lock_event_statement(*, with_payload: bool) -> Executable:
    columns = [_EVENTS.c.status, _EVENTS.c.received_at]
    if with_payload:
        columns.append(_EVENTS.c.payload)
    return select(*columns).where(_EVENTS.c.id == bindparam("event_id")).with_for_update()


_LOCK_EVENT = _lock_event_statement(with_payload=False)
_LOCK_EVENT_WITH_PAYLOAD = _lock_event_statement(with_payload=True)


@dataclass(frozen=True, slots=True)
class _EventState:
    status: str
    received_at: datetime
    payload: dict[str, Any] | None


@functools.cache
def insert_event_statement(dialect: str, *, locking: bool) -> Executable:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(_EVENTS).on_conflict_do_nothing(index_elements=["id"])
    if locking:
        # The object's lock rides on the insert (RETURNING runs only for an inserted row,
        # after it is written): one round trip less per event, and the same order as
        # before, event row first, then the object. The apply's reads are later
        # statements, so under READ COMMITTED they see whatever the previous holder
        # of the lock committed.
        return statement.returning(_EVENTS.c.id, lock_call())
    return statement.returning(_EVENTS.c.id)


async def _insert_event(
    session: AsyncSession,
    received: Received,
    *,
    status: EventStatus,
    lock: int | None,
    error: str | None = None,
) -> bool:
    """Record the event, holding the object's lock `lock` if inserted (PostgreSQL); False
    when a row with its id already exists (then nothing is locked). `error`: recorded as
    `failed` with this `last_error`, after an apply that failed."""
    values = event_values(received, status=status, lock=lock, error=error)
    dialect = session.get_bind().dialect.name
    statement = insert_event_statement(dialect, locking=lock is not None)
    return (await session.execute(statement, values)).first() is not None


def event_values(
    received: Received, *, status: EventStatus, lock: int | None, error: str | None = None
) -> dict[str, Any]:
    """The parameters of `insert_event_statement` (every intake path records the same row)."""
    now = utcnow()
    values: dict[str, Any] = {
        "id": received.id,
        "type": received.type,
        "api_version": received.api_version,
        "created": received.created,
        "livemode": received.livemode,
        "account": received.account,
        "payload": received.payload,
        "received_at": now,
        "status": status,
        # A `processed` row is written as the apply's outcome in advance, in the
        # transaction that applies it: the commit makes both durable or neither, and
        # `_apply` rewrites the row when the apply fails or must wait on Stripe.
        "attempts": 1 if status in ("processed", "failed") else 0,
        "processed_at": now if status in ("processed", "ignored") else None,
    }
    if error is not None:
        values["last_error"] = error
    if lock is not None:
        values["lock_key"] = lock
    return values


async def redelivery_done(session: AsyncSession, event_id: str) -> bool:
    """For an event already recorded: lock its row and tell whether it is done (the delivery
    is a duplicate). Raises EventInProgress (500, Stripe delivers again) when the row vanished
    between the insert and the lock (an operator removed it) or another delivery is still
    applying it: answering 200 then would lose the event if that other apply fails."""
    # Concurrent deliveries of one event wait here for the first to commit.
    state = await _lock_event(session, event_id)
    if state is None:
        raise EventInProgress()
    if state.status in ("processed", "ignored"):
        return True
    if state.status == "pending" and utcnow() - state.received_at < IN_FLIGHT:
        raise EventInProgress()
    return False


async def _lock_event(
    session: AsyncSession, event_id: str, *, with_payload: bool = False
) -> _EventState | None:
    # FOR UPDATE serialises deliveries and replays of one event on PostgreSQL; SQLite's
    # BEGIN IMMEDIATE already did. The payload is read only when it is needed (replay).
    statement = _LOCK_EVENT_WITH_PAYLOAD if with_payload else _LOCK_EVENT
    row = (await session.execute(statement, {"event_id": event_id})).one_or_none()
    if row is None:
        return None
    payload = row.payload if with_payload else None
    return _EventState(status=row.status, received_at=row.received_at, payload=payload)


async def _finish(
    session: AsyncSession,
    event_id: str,
    status: EventStatus,
    *,
    error: str | None = None,
    attempts: int = 1,
) -> None:
    """Set the event's status; `attempts` is added to its count (0 when the insert counted
    this attempt already, -1 to take that back while it waits on Stripe)."""
    values: dict[str, Any] = {"status": status}
    if status == "ignored":
        values["processed_at"] = utcnow()
    else:
        if attempts:
            values["attempts"] = _EVENTS.c.attempts + attempts
        values["processed_at"] = utcnow() if status == "processed" else None
    if error is not None:
        values["last_error"] = error
    await session.execute(update(_EVENTS).where(_EVENTS.c.id == event_id).values(values))


def awaiting_retry(now: datetime) -> ColumnElement[bool]:
    """Recorded events not applied yet that nothing is working on: `failed` ones, and
    `pending` ones older than IN_FLIGHT (their process died), which count as failed."""
    return or_(
        _EVENTS.c.status == "failed",
        and_(_EVENTS.c.status == "pending", _EVENTS.c.received_at < now - IN_FLIGHT),
    )


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
    # The row's watermark when the tie was seen: Stripe's answer is newer than it.
    seen: Watermark | None


def _lock_for(session: AsyncSession, received: Received, route: EventRoute | None) -> int | None:
    """The object lock the event insert should take, or None: nothing to apply, an object
    without an id (the apply fails on it), or SQLite (no object locks there)."""
    if route is None or received.event is None:
        return None
    if session.get_bind().dialect.name != "postgresql":
        return None
    try:
        object_id = object_id_of(route.kind, received.event.data.object)
    except ValueError:
        return None
    return lock_key(received.account, route.kind, object_id)


class EventProcessor:
    """Records and applies events: webhook deliveries, admin replays and the CLI's replay."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: Gateway,
        *,
        livemode: bool,
        accept_other_mode_events: bool,
        fast_path: bool = True,
    ) -> None:
        self._sessionmaker = sessionmaker
        # PostgreSQL: new events skip SQLAlchemy's execution layer (mirror/intake_pg.py).
        self._fast = FastIntake.for_sessionmaker(sessionmaker) if fast_path else None
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

    def _thin(self) -> ThinEvents:
        from portal_service.mirror.thin import ThinEvents  # thin.py builds on this module

        return ThinEvents(self._sessionmaker, self._gateway, livemode=self._livemode)

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

    @property
    def has_fast_path(self) -> bool:
        return self._fast is not None

    async def receive_fast(self, received: Received) -> WebhookStatus | None:
        """`receive` on PostgreSQL's fast path alone: None, with nothing written, when the
        event needs the general path (then `receive` does all of it)."""
        started = time.perf_counter()
        route = self._route(received)
        if route is None:
            return None
        status = await self._receive_fast(received, route)
        if status is not None:
            WEBHOOK_APPLY_SECONDS.observe(time.perf_counter() - started)
        return status

    async def _receive(self, received: Received) -> WebhookStatus:
        if received.event is None:  # a thin event: its own, rarer path (mirror/thin.py)
            return await self._thin().receive(received)
        route = self._route(received)
        if route is not None:
            fast = await self._receive_fast(received, route)
            if fast is not None:
                return fast
        async with self._sessionmaker() as session:
            inserted = await _insert_event(
                session,
                received,
                status="processed" if route is not None else "ignored",
                lock=_lock_for(session, received, route),
            )
            if inserted and route is None:
                await session.commit()
                self._done(received, "ignored")
                return "ignored"
            if not inserted and await redelivery_done(session, received.id):
                await session.rollback()
                self._done(received, "duplicate")
                return "duplicate"
            result = await self._apply(session, received, route, fresh=inserted)
        if isinstance(result, _Refetch):
            return await self._apply_refetched(received, result)
        return result

    async def _receive_fast(self, received: Received, route: EventRoute) -> WebhookStatus | None:
        """The PostgreSQL fast path for a new event; None when the general path must take it
        (it was recorded before, Stripe must settle a tie, or anything failed)."""
        if self._fast is None:
            return None
        obj = received.payload["data"]["object"]
        try:
            object_id = object_id_of(route.kind, obj)
            incoming = parse_incoming(route.kind, obj, route.action)
        except Exception:  # the general path records it failed
            return None
        lock = lock_key(received.account, route.kind, object_id)
        outcome = await self._fast.receive(
            event=event_values(received, status="processed", lock=lock),
            insert_event=insert_event_statement("postgresql", locking=True),
            kind=route.kind,
            object_id=object_id,
            incoming=incoming,
            source=self._source(received),
        )
        if outcome is None:
            return None
        result: ReplayOutcome = "stale" if outcome is Outcome.STALE else "processed"
        self._done(received, result)
        return result

    def _source(self, received: Received) -> Source:
        return Source(
            ts=received.created,
            event_id=received.id,
            livemode=received.livemode,
            account=received.account,
            # Stripe cannot settle a tie when there is no Stripe (offline mode) or when
            # this key cannot see the object (an accepted event of the other mode: the
            # re-fetch would answer 404 and tombstone an object that exists).
            settle_ties_locally=self._gateway.offline or received.livemode != self._livemode,
        )

    async def replay(self, event_id: str) -> tuple[EventStatus, ReplayOutcome]:
        """Re-apply a recorded event through the same path, whatever its status.
        Returns (its recorded status now, what happened). Raises EventNotFound, ApplyFailed."""
        async with self._sessionmaker() as session:
            state = await _lock_event(session, event_id, with_payload=True)
            if state is None or state.payload is None:
                raise EventNotFound()
            received = received_from(state.payload)
            if received.event is None:  # a thin event (mirror/thin.py)
                await session.rollback()
                return await self._thin().replay(received)
            applied = await self._apply(session, received, self._route(received), fresh=False)
        if not isinstance(applied, _Refetch):
            return ("ignored" if applied == "ignored" else "processed"), applied
        refetched = await self._apply_refetched(received, applied)
        # duplicate: another delivery finished it while Stripe was being asked.
        return "processed", "processed" if refetched == "duplicate" else refetched

    async def _apply(
        self, session: AsyncSession, received: Received, route: EventRoute | None, *, fresh: bool
    ) -> ReplayOutcome | _Refetch:
        """With the event row inserted or locked: apply it, mark it, commit. `fresh`: this
        transaction inserted the row, already marked `processed` and holding the object's
        lock (`_insert_event`)."""
        if route is None or received.event is None:
            await _finish(session, received.id, "ignored")
            await session.commit()
            self._done(received, "ignored")
            return "ignored"
        # The recorded payload's copy of the object: its session URLs were removed when the
        # event was received, so the apply need not redact it again.
        obj = received.payload["data"]["object"]
        source = self._source(received)
        try:
            object_id = object_id_of(route.kind, obj)
            if fresh:
                outcome = await apply_object(
                    session, route.kind, obj, source=source, action=route.action
                )
            else:
                async with session.begin_nested():
                    await lock_object(
                        session, account=received.account, kind=route.kind, object_id=object_id
                    )
                    outcome = await apply_object(
                        session, route.kind, obj, source=source, action=route.action
                    )
        except Exception as exc:
            if fresh:
                await self._fail_fresh(session, received, exc)
            else:
                await self._fail(session, received, exc)
            raise ApplyFailed() from exc
        if outcome is Outcome.REFETCH:
            if fresh:
                # Not processed after all: it waits on Stripe, and that attempt is
                # counted when it ends (_apply_refetched).
                await _finish(session, received.id, "pending", attempts=-1)
            seen = await watermark(session, route.kind, object_id)
            # Durable before Stripe is called; the transaction (and the lock) end here.
            await session.commit()
            return _Refetch(route=route, object_id=object_id, seen=seen)
        if not fresh:
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
        the lock and stamped with Stripe's Date (DESIGN.md section 4 item 4). Asked again
        when an event from the answer's own second reached the row meanwhile."""
        kind = refetch.route.kind
        seen = refetch.seen
        for _ in range(_REFETCH_ATTEMPTS):
            try:
                fetched = await self._fetch(refetch, received.account)
            except Exception as exc:
                # Stripe refused or is unreachable (or the gateway broke): the event is
                # failed, never left pending, and a redelivery or replay asks again.
                return await self._fail_refetch(received, exc)
            async with self._sessionmaker() as session:
                state = await _lock_event(session, received.id)
                if state is None or state.status in ("processed", "ignored"):
                    await session.rollback()
                    self._done(received, "duplicate")
                    return "duplicate"
                try:
                    async with session.begin_nested():
                        outcome = await apply_answer(
                            session,
                            kind,
                            refetch.object_id,
                            fetched,
                            account=received.account,
                            livemode=received.livemode,
                            supersedes=seen,
                        )
                        if outcome is Outcome.REFETCH:
                            seen = await watermark(session, kind, refetch.object_id)
                except Exception as exc:
                    await self._fail(session, received, exc)
                    raise ApplyFailed() from exc
                if outcome is Outcome.REFETCH:
                    # Nothing written; the lock goes before Stripe is asked again.
                    await session.rollback()
                    continue
                await _finish(session, received.id, "processed")
                await session.commit()
            _count(received.type, "refetched")
            refetched: Literal["processed", "stale"] = (
                "stale" if outcome is Outcome.STALE else "processed"
            )
            self._done(received, refetched)
            return refetched
        unsettled = RefetchUnsettled("Stripe's answers kept tying with events applied meanwhile")
        return await self._fail_refetch(received, unsettled)

    async def _fail_refetch(self, received: Received, exc: Exception) -> Literal["duplicate"]:
        """Record a tie Stripe did not settle as failed, unless another delivery finished
        the event meanwhile ("duplicate"). Raises ApplyFailed."""
        async with self._sessionmaker() as session:
            state = await _lock_event(session, received.id)
            if state is not None and state.status in ("processed", "ignored"):
                await session.rollback()
                self._done(received, "duplicate")
                return "duplicate"
            await self._fail(session, received, exc)
        raise ApplyFailed() from exc

    async def _fail(self, session: AsyncSession, received: Received, exc: BaseException) -> None:
        error = describe_error(exc)
        await _finish(session, received.id, "failed", error=error)
        await session.commit()
        self._failed(received, error)

    async def _fail_fresh(
        self, session: AsyncSession, received: Received, exc: BaseException
    ) -> None:
        """The apply of a just-inserted event failed: nothing of its transaction is kept, the
        event row included, so the event is recorded again, `failed`, in a new one. Should a
        concurrent delivery have recorded it meanwhile, that one's row stands."""
        error = describe_error(exc)
        await session.rollback()
        await _insert_event(session, received, status="failed", lock=None, error=error)
        await session.commit()
        self._failed(received, error)

    def _failed(self, received: Received, error: str) -> None:
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
