"""The event inbox: each delivery's `stripe_events` row and its states (ARCHITECTURE.md,
"Webhook processing"). A row's status, `attempts` and `processed_at` change only through
the named transitions here:

- `record_event`: a new row, `processed` in advance (attempts 1, in the transaction that
  applies it: the commit makes both durable or neither), `ignored`, `pending` (a thin
  event before Stripe is asked, attempts 0) or `failed` (attempts 1, after the apply's
  transaction was rolled back).
- `wait_on_stripe`: recorded-as-processed -> `pending`, the apply waiting on Stripe to
  settle a tie; its attempt is counted when that ends.
- `mark_processed`, `mark_failed` (an attempt each), `mark_ignored`.

A `pending` row older than IN_FLIGHT is one whose process died: it counts as failed
(`awaiting_retry`), and `replay` retries it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Executable, and_, bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from portal_service.db import utcnow
from portal_service.errors import DomainError
from portal_service.mirror.events import Received
from portal_service.mirror.locks import lock_call
from portal_service.mirror.schemas import EventStatus
from portal_service.mirror.tables import StripeEvent, table_of
from portal_service.ops.logging import scrub

# A `pending` row younger than this is being applied by another delivery right now (it
# is waiting on Stripe to settle a tie); older, its process died and it counts as failed.
IN_FLIGHT = timedelta(seconds=60)
_MAX_ERROR_LENGTH = 500


class EventInProgress(DomainError):
    status = 500
    code = "event_in_progress"
    default_detail = (
        "Another delivery of this event is being applied right now; it will be retried."
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
class EventState:
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


async def record_event(
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
    state = await lock_event(session, event_id)
    if state is None:
        raise EventInProgress()
    if state.status in ("processed", "ignored"):
        return True
    if state.status == "pending" and utcnow() - state.received_at < IN_FLIGHT:
        raise EventInProgress()
    return False


async def lock_event(
    session: AsyncSession, event_id: str, *, with_payload: bool = False
) -> EventState | None:
    # FOR UPDATE serialises deliveries and replays of one event on PostgreSQL; SQLite's
    # BEGIN IMMEDIATE already did. The payload is read only when it is needed (replay).
    statement = _LOCK_EVENT_WITH_PAYLOAD if with_payload else _LOCK_EVENT
    row = (await session.execute(statement, {"event_id": event_id})).one_or_none()
    if row is None:
        return None
    payload = row.payload if with_payload else None
    return EventState(status=row.status, received_at=row.received_at, payload=payload)


async def _set(session: AsyncSession, event_id: str, values: dict[str, Any]) -> None:
    await session.execute(update(_EVENTS).where(_EVENTS.c.id == event_id).values(values))


async def wait_on_stripe(session: AsyncSession, event_id: str) -> None:
    """Recorded-as-processed -> pending, in the transaction that recorded it: the apply
    needs Stripe to settle a tie. Its attempt is taken back; it counts when the tie is
    settled (`mark_processed`) or not (`mark_failed`)."""
    values = {"status": "pending", "attempts": _EVENTS.c.attempts - 1, "processed_at": None}
    await _set(session, event_id, values)


async def mark_processed(session: AsyncSession, event_id: str) -> None:
    """-> processed: an attempt that applied the event (or found it already applied)."""
    values = {"status": "processed", "attempts": _EVENTS.c.attempts + 1, "processed_at": utcnow()}
    await _set(session, event_id, values)


async def mark_failed(session: AsyncSession, event_id: str, *, error: str) -> None:
    """-> failed: an attempt that did not apply it; `replay` (or a redelivery) retries it."""
    values = {
        "status": "failed",
        "attempts": _EVENTS.c.attempts + 1,
        "processed_at": None,
        "last_error": error,
    }
    await _set(session, event_id, values)


async def mark_ignored(session: AsyncSession, event_id: str, *, error: str | None = None) -> None:
    """-> ignored: nothing of it is mirrored (`error` says why, when it is unusual)."""
    values: dict[str, Any] = {"status": "ignored", "processed_at": utcnow()}
    if error is not None:
        values["last_error"] = error
    await _set(session, event_id, values)


def awaiting_retry(now: datetime) -> ColumnElement[bool]:
    """Recorded events not applied yet that nothing is working on: `failed` ones, and
    `pending` ones older than IN_FLIGHT (their process died), which count as failed."""
    return or_(
        _EVENTS.c.status == "failed",
        and_(_EVENTS.c.status == "pending", _EVENTS.c.received_at < now - IN_FLIGHT),
    )
